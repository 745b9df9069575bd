"""The end of a sweep: one table and one phase diagram from every cell's summary.json.

Written to the sweep dir: sweep_summary.csv (one row per point of the sweep's own axes and split protocol),
cells.csv (one row per cell, failed ones with their error, and crossed_<column>/lead_<column>: the epoch each
thresholded measure crossed and its lead over the grok), phase_diagram.png; the logger (grokpipe.loggers: W&B's
run in the sweep's group) holds them too.
The sweep dir's cells.json (grokpipe.core.cells, written by the sweeper before launch) says which cells to expect.
The command exits 1 when any cell failed: the callback ends the process, as it is the last thing Hydra runs.
"""

from __future__ import annotations

import csv
import json
import statistics
import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

import grokpipe.core.split as split
from grokpipe.core.cells import (
    BOUNDARY,
    BOUNDARY_FIELDS,
    SUCCESS,
    cell_coordinates,
    exit_status,
    failed_cells,
    read_cells,
    sweep_group,
)
from grokpipe.core.outputs import flat_crossings

STATS = ("split", "n", "grokked", "share_grokked", "failed", "grok_mean", "grok_min", "grok_max")
TABLE_FIELDS = ("ratio", "wd", *STATS)  # a sweep without coordinates (a dir from before cells.json held them)
CELL_FIELDS = (
    "num",
    "status",
    "ratio",
    "wd",
    "seed",
    "split_seed",
    "split",
    "d_model",
    "p",
    "grok_epoch",
    "memorized_epoch",
    "epochs_run",
    "error",
    "dir",
)


def _order(value) -> tuple:
    """Sort numbers as numbers and before anything else (an option's name, a list)."""
    return (0, value, "") if isinstance(value, (int, float)) and not isinstance(value, bool) else (1, 0, str(value))


def _one(values: set):
    return next(iter(values)) if len(values) == 1 else None


def table(cells: list[dict]) -> list[dict]:
    """One row per point of the sweep (its coordinates) and split protocol: seeds, how many grokked, grok epoch
    mean/min/max over the seeds that did. Every row also carries the ratio and weight decay its cells ran at (None
    where they differ). Seeds on their own splits and seeds on one split are separate rows (grokpipe.core.split).
    A cell that never wrote a summary counts as failed in its own row."""
    groups: dict[tuple, list[dict]] = {}
    for c in cells:
        coords = cell_coordinates(c)
        protocol = split.of_run(c, c.get("dir")) or ""
        groups.setdefault((json.dumps(coords), protocol), []).append(c)
    rows = []
    for (key, protocol), members in groups.items():
        epochs = [c["grok_epoch"] for c in members if c.get("grok_epoch") is not None]
        done = [c for c in members if c["status"] in SUCCESS]
        known = split.label(protocol or None, (c.get("split_seed") for c in members))
        rows.append(
            {
                **json.loads(key),
                "ratio": _one({round(c["ratio"], 6) for c in members if c.get("ratio") is not None}),
                "wd": _one({c["wd"] for c in members if c.get("wd") is not None}),
                "split": known,
                "n": len(members),
                "grokked": len(epochs),
                "share_grokked": round(len(epochs) / len(done), 3) if done else None,
                "failed": len(members) - len(done),
                "grok_mean": round(statistics.fmean(epochs), 1) if epochs else None,
                "grok_min": min(epochs) if epochs else None,
                "grok_max": max(epochs) if epochs else None,
            }
        )
    axes = axes_of(cells)
    rows.sort(key=lambda r: (*(_order(r.get(k)) for k in axes), r["split"]))
    return rows


def axes_of(cells: list[dict]) -> list[str]:
    """The sweep's coordinate keys, in the order its cells name them."""
    return list(dict.fromkeys(k for c in cells for k in cell_coordinates(c)))


def table_fields(axes: list[str]) -> tuple[str, ...]:
    """The table's columns: the sweep's axes, then the ratio (always: the width it resolved to against the task)
    and the weight decay where it is not an axis, then the statistics."""
    extra = [k for k in ("ratio", "wd") if k not in axes and not (k == "wd" and "optim.wd" in axes)]
    return (*axes, *extra, *STATS)


def format_table(rows: list[dict], fields: tuple[str, ...] = TABLE_FIELDS) -> str:
    def cell(v):
        return "-" if v is None else (f"{v:g}" if isinstance(v, float) else str(v))

    widths = {k: max(len(k), *(len(cell(r.get(k))) for r in rows)) for k in fields} if rows else {}
    lines = ["  ".join(k.rjust(widths[k]) for k in fields)]
    lines += ["  ".join(cell(r.get(k)).rjust(widths[k]) for k in fields) for r in rows]
    return "\n".join(lines)


def _write_csv(path: Path, fields: tuple, rows: list[dict]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def cell_fields(cells: list[dict], axes: list[str] = ()) -> tuple[str, ...]:
    """cells.csv's columns: the sweep's coordinates, the fixed ones, then the crossings these cells' measures
    report."""
    crossings = [k for c in cells for k in c if k.startswith(("crossed_", "lead_"))]
    return tuple(dict.fromkeys([*axes, *CELL_FIELDS, *crossings]))


def summarize(sweep_dir: Path) -> tuple[list[dict], list[dict]]:
    """Write the sweep summary files; returns (cells, table rows)."""
    from grokpipe.results.figures import plot_sweep

    cells = [flat_crossings(c) for c in read_cells(sweep_dir)]
    for c in cells:  # a run from before summary.json said its split protocol: from its config as written
        c["split"] = split.of_run(c, c.get("dir"))
        c.update(cell_coordinates(c))  # its coordinates as columns of cells.csv
    rows = table(cells)
    axes = axes_of(cells)
    _write_csv(sweep_dir / "cells.csv", cell_fields(cells, axes), cells)
    _write_csv(sweep_dir / "sweep_summary.csv", table_fields(axes), rows)
    if rows:
        plot_sweep(rows, axes, sweep_dir / "phase_diagram.png", title=sweep_dir.name)
    return cells, rows


def read_boundary(sweep_dir: Path) -> list[dict]:
    """A boundary search's table (boundary.csv), numbers as numbers; [] for a grid sweep."""
    path = sweep_dir / BOUNDARY
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    num = lambda v: None if v in ("", None) else (int(v) if v.lstrip("-").isdigit() else float(v))  # noqa: E731
    return [{k: (r[k] if k in ("mode", "status", "contradictions") else num(r[k])) for k in BOUNDARY_FIELDS}
            for r in rows]  # fmt: skip


def log_summary(cfg: DictConfig, sweep_dir: Path, group: str, rows: list[dict], cells: list[dict]) -> None:
    """The sweep's end to its logger (grokpipe.loggers: W&B's is a run of job_type `sweep-summary` in the sweep's
    group): the table, the cells, the figures and the counts."""
    from grokpipe.loggers import build_logger

    axes = axes_of(cells)
    fields, columns = cell_fields(cells, axes), table_fields(axes)
    tables = {
        "sweep_summary": (columns, [[r.get(k) for k in columns] for r in rows]),
        "cells": (fields, [[c.get(k) for k in fields] for c in cells]),
    }
    images = {"phase_diagram": sweep_dir / "phase_diagram.png"}
    boundary = read_boundary(sweep_dir)
    if boundary:  # a boundary search: its table and its figure beside the grid's
        tables["boundary"] = (BOUNDARY_FIELDS, [[b[k] for k in BOUNDARY_FIELDS] for b in boundary])
        images["boundary_diagram"] = sweep_dir / "boundary.png"
    totals = {"n_cells": len(cells), "n_failed": len(failed_cells(cells)), "n_grokked": sum(r["grokked"] for r in rows)}
    config = {"sweep_dir": str(sweep_dir), "task": {"op": cfg.task.get("op"), "p": cfg.task.get("p")}}
    build_logger(cfg.logger).sweep_summary(config, sweep_dir, group, tables, images, totals)


class SweepSummary(Callback):
    """Hydra's last word on a multirun: the summary files, the table, and the command's exit status.

    Ends the process with status 1 when any cell failed or none ran, since @hydra.main discards a sweep's results.
    """

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        cells, rows = summarize(sweep_dir)
        failed = failed_cells(cells)
        print(f"\nsweep summary ({len(cells)} cells, {len(failed)} failed): {sweep_dir}")
        print(format_table(rows, table_fields(axes_of(cells))))
        print(split.sentence([c.get("split") for c in cells]))
        for b in read_boundary(sweep_dir):
            print(
                f"boundary ({b['mode']}) at {b['axis']:g}: critical {b['critical']} "
                f"[{b['bracket_lo']}, {b['bracket_hi']}] {b['status']}; {b['runs']} runs, {b['run_epochs']} run-epochs"
            )
        figures = [sweep_dir / n for n in ("phase_diagram.png", "boundary.png") if (sweep_dir / n).exists()]
        if figures:
            print(f"figures: {'   '.join(map(str, figures))}")
        for c in failed:
            print(f"  cell {c['num']} {c['status']}: {c.get('error')}  ({c['dir']})")
        log_summary(config, sweep_dir, config.logger.get("group") or sweep_group(sweep_dir), rows, cells)
        if any(Path(c["dir"]).is_dir() for c in cells):
            from grokpipe.results.database import build_sweep_db

            try:
                print(f"results database: {build_sweep_db(sweep_dir)}")
            except Exception as exc:  # the database is derived from the files: never fail the sweep over it
                print(f"warning: results database not built ({type(exc).__name__}: {exc})")
        if status := exit_status(cells):
            sys.exit(status)  # SystemExit passes Hydra's guard on callbacks, which swallows any Exception
