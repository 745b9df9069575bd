"""A sweep's bookkeeping in its sweep dir, shared by the sweeper, the launchers, the job body and the sweep summary.

cells.json    the manifest: one {"num", "overrides", "dir", "coords", "split"} per cell, written by the sweeper
              before any launch; `coords` are the cell's coordinates: every swept key but the seed, as the cell
              resolved it (`coordinates`), what the sweep summary groups its seeds by; `split` its split protocol
packs.json    a packed sweep's plan: one {"pack", "cells", "dirs"} per pack job
boundary.csv  a boundary search's table (and boundary.json its state), written by the boundary sweeper
A cell's outcome is its summary.json `status`: one of SUCCESS, FAILED, or MISSING when it never wrote one.

Imports nothing heavy at module level: Hydra imports this with the plugins on every `launch.py --help`.
"""

from __future__ import annotations

import json
from pathlib import Path

CELLS = "cells.json"
PACKS = "packs.json"
PACK_DIRS = "packs"  # a packed sweep's pack jobs' own dirs: packs/<k> (their Hydra config, their log)
BOUNDARY = "boundary.csv"  # a boundary search's result (hydra/sweeper=boundary): one row per searched axis value
BOUNDARY_FIELDS = (
    "mode", "axis", "critical", "bracket_lo", "bracket_hi", "status", "seeds", "points", "runs", "run_epochs",
    "contradictions",
)  # fmt: skip
SUCCESS = ("grokked", "completed", "diverged")  # a diverged run is a result: it did not grok
FAILED = "failed"
MISSING = "missing"
SWEEP_FAILED = 1  # the launch command's exit status when any cell did not succeed


class CellDied(RuntimeError):
    """A cell's process ended without a result; its cause is in the cell's summary.json."""


def sweep_group(sweep_dir: str | Path) -> str:
    """W&B group shared by every cell of one sweep and by its summary run."""
    path = Path(sweep_dir)
    return f"sweep-{path.parent.name}_{path.name}"


# the keys a coordinate also resolves to: a swept ratio is also the width it became
DERIVED = {"model.ratio": ("model.d_model",)}
SEED_KEY = "train.seed"  # what a sweep aggregates over: never a coordinate
PLANNED = ("coords", "split")  # what a cells.json entry knows of its cell before it runs


def _plain(value):
    from omegaconf import OmegaConf

    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def coordinates(overrides: list[str], swept: set[str], cfg) -> dict:
    """A cell's coordinates: each swept key but the seed with the value the composed `cfg` resolved it to (a group
    key, `optim=muon`, with the option chosen), in the order of the overrides, then what a swept key derives
    (`model.ratio` -> `model.d_model`)."""
    from omegaconf import OmegaConf

    coords = {}
    for text in overrides:
        key = text.split("=", 1)[0].lstrip("+~")
        if key not in swept or key == SEED_KEY or key.startswith("hydra."):
            continue
        if "." in key:
            coords[key] = _plain(OmegaConf.select(cfg, key, default=None))
        else:  # a group: its option, as chosen
            coords[key] = text.split("=", 1)[1]
        for derived in DERIVED.get(key, ()):
            coords[derived] = _plain(OmegaConf.select(cfg, derived, default=None))
    return coords


def write_cells(sweep_dir: Path, manifest: list[dict], keep_packs: bool = False) -> None:
    """The manifest of a new launch; an earlier packed launch's plan in this dir is removed, as it is not this one's,
    unless `keep_packs` (a boundary search's rounds and resumes add to one plan)."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / CELLS).write_text(json.dumps(manifest, indent=1) + "\n")
    if not keep_packs:
        (sweep_dir / PACKS).unlink(missing_ok=True)


def write_packs(sweep_dir: Path, plan: list[dict]) -> None:
    (sweep_dir / PACKS).write_text(json.dumps(plan, indent=1) + "\n")


def read_packs(sweep_dir: Path) -> list[dict]:
    """The pack plan (packs.json): one {"pack", "cells", "dirs"} per pack; empty if the sweep is not packed."""
    path = sweep_dir / PACKS
    return json.loads(path.read_text()) if path.exists() else []


def read_pack(sweep_dir: Path, k: int) -> dict | None:
    """Pack k's entry of packs.json; None if the sweep is not packed or has no pack k."""
    return next((p for p in read_packs(sweep_dir) if p["pack"] == k), None)


def job_cells(sweep_dir: Path, num: int) -> list[int]:
    """The cells launcher job `num` trains: cell `num` itself, or in a packed sweep the cells of pack `num`."""
    if not (sweep_dir / PACKS).exists():
        return [num]
    pack = read_pack(sweep_dir, num)
    return pack["cells"] if pack is not None else []


def read_cells(sweep_dir: Path) -> list[dict]:
    """One record per expected cell: its summary.json, or status `missing` if it never wrote one."""
    manifest = sweep_dir / CELLS
    if manifest.exists():
        expected = json.loads(manifest.read_text())
    else:  # a sweep dir from elsewhere: whatever cells are there
        expected = [{"num": int(d.name), "dir": str(d)} for d in sweep_dir.iterdir() if d.name.isdigit()]
    cells = []
    for entry in sorted(expected, key=lambda e: e["num"]):
        path = Path(entry["dir"]) / "summary.json"
        record = {
            "num": entry["num"],
            "dir": entry["dir"],
            "status": MISSING,
            "error": "no summary.json: the job never ran or was killed",
        }
        planned = {k: entry[k] for k in PLANNED if k in entry}  # a cell that never wrote a summary keeps its row
        record.update(planned)
        if path.exists():
            record = {**record, "error": None, **json.loads(path.read_text()), **planned}
        cells.append(record)
    return cells


def mark_failed(sweep_dir: Path, num: int, error: str) -> None:
    """A job whose process died without a word (killed, out of memory, node failure): record why in its cells.

    In a packed sweep job `num` is pack `num`, and every cell of that pack not yet finished is marked."""
    from grokpipe.core.outputs import write_summary  # atomic write; outputs imports torch, so only when a cell died

    nums = job_cells(sweep_dir, num)
    for entry in json.loads((sweep_dir / CELLS).read_text()):
        if entry["num"] not in nums:
            continue
        path = Path(entry["dir"]) / "summary.json"
        known = json.loads(path.read_text()) if path.exists() else {}
        if known.get("status") in SUCCESS:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        write_summary(path, {**known, "status": FAILED, "error": error})


def failed_cells(cells: list[dict]) -> list[dict]:
    """The cells of read_cells that did not succeed: failed, missing, or any other status."""
    return [c for c in cells if c["status"] not in SUCCESS]


def exit_status(cells: list[dict]) -> int:
    """The launch command's exit status for a sweep: 0 when it had cells and every one succeeded, else SWEEP_FAILED."""
    return SWEEP_FAILED if failed_cells(cells) or not cells else 0


def run_group(task) -> str:
    """W&B group of a single run without logger.group: `<op>-p<p>` for a modular task, else the task's name."""
    op, p = task.get("op"), task.get("p")
    return f"{op}-p{p}" if op is not None and p is not None else str(task.get("name"))


def cell_coordinates(cell: dict) -> dict:
    """The cell's coordinates (cells.json: its swept keys but the seed); for a sweep dir from before they were
    recorded, its ratio and weight decay."""
    if isinstance(cell.get("coords"), dict):
        return cell["coords"]
    ratio = cell.get("ratio")
    return {"ratio": None if ratio is None else round(ratio, 6), "wd": cell.get("wd")}
