"""Results in a notebook: `grokpipe.load(path)` reads a run dir, a sweep dir or a results database into pandas.

    import grokpipe
    r = grokpipe.load("multirun/exp5_ratio_wd1")
    r.cells      # one row per run: its coordinates in the sweep, status, grok and memorised epochs, hyperparameters,
                 # final metrics, each thresholded measure's crossing (crossed_<column>) and lead (lead_<column>)
    r.metrics    # one row per evaluation: `run` (the cell number, or the run id in a database), epoch, every column

Reads only the output contract (cells.json, summary.json, metrics.csv; the database's runs and metrics tables), as
the sweep summary and the results database do. Epoch counts and integers are nullable integers (`Int64`: a run
that never grokked has <NA>), `grokked` is boolean, `status` and `split` are categories.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

INTEGERS = ("num", "grok_epoch", "memorized_epoch", "epochs_run", "seed", "split_seed", "d_model", "p", "n_params",
            "max_epochs", "max_steps", "batch_size", "cell", "grok_gap", "n_evals", "epoch")  # fmt: skip
CATEGORIES = ("status", "split", "unit")
LEFT_OUT = ("provenance", "crossed", "hidden_progress", "config", "fingerprint", "ingest_generation")  # nested/bulky


@dataclass
class Results:
    cells: pd.DataFrame
    metrics: pd.DataFrame
    source: Path

    def __repr__(self) -> str:
        return f"Results({self.source}: {len(self.cells)} runs, {len(self.metrics)} evaluations)"


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    for col in frame.columns:
        if col in INTEGERS or col.startswith(("crossed_", "lead_")):
            frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("Int64")
        elif col in CATEGORIES:
            frame[col] = frame[col].astype("category")
        elif col == "grokked":
            frame[col] = frame[col].astype("boolean")
    return frame


def _flat(record: dict) -> dict:
    """A summary as one row: crossings as columns (as cells.csv has them), nested records left out."""
    from grokpipe.core.outputs import flat_crossings

    return {k: v for k, v in flat_crossings(record).items() if k not in LEFT_OUT and not isinstance(v, dict)}


def _metrics(dirs: dict, key: str) -> pd.DataFrame:
    from grokpipe.core.outputs import read_metrics

    frames = []
    for name, run_dir in dirs.items():
        path = Path(run_dir) / "metrics.csv"
        if path.is_file():
            rows = pd.DataFrame(read_metrics(path))
            rows.insert(0, key, name)
            frames.append(rows)
    return _typed(pd.concat(frames, ignore_index=True)) if frames else pd.DataFrame({key: [], "epoch": []})


def _from_sweep(sweep_dir: Path) -> Results:
    from grokpipe.core.cells import cell_coordinates, read_cells
    from grokpipe.core.split import of_run

    rows = []
    for c in read_cells(sweep_dir):
        coords = cell_coordinates(c)
        row = {**coords, **_flat(c)}
        row["split"] = of_run(c, c.get("dir"))
        row.pop("coords", None)
        rows.append(row)
    cells = _typed(pd.DataFrame(rows))
    return Results(cells, _metrics({c["num"]: c["dir"] for c in rows}, "run"), sweep_dir)


def _from_run(run_dir: Path) -> Results:
    from grokpipe.core.split import of_run

    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        summary = {"status": "missing"}
    row = {**_flat(summary), "split": of_run(summary, run_dir), "dir": str(run_dir)}
    return Results(_typed(pd.DataFrame([row])), _metrics({run_dir.name: run_dir}, "run"), run_dir)


def _from_db(db: Path) -> Results:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            runs = pd.read_sql("SELECT * FROM runs ORDER BY run_id", con)
            metrics = pd.read_sql("SELECT * FROM metrics ORDER BY run_id, epoch", con)
    except (sqlite3.DatabaseError, pd.errors.DatabaseError) as exc:
        raise ValueError(f"{db} is not a grokpipe results database ({str(exc).splitlines()[0]})") from None
    coords = pd.DataFrame([json.loads(c) if c else {} for c in runs.get("coords", [])], index=runs.index)
    cells = pd.concat([coords, runs.drop(columns=[c for c in (*LEFT_OUT, "coords") if c in runs])], axis=1)
    cells["grokked"] = cells["grokked"].astype(bool)
    return Results(_typed(cells), _typed(metrics.rename(columns={"run_id": "run"})), db)


def load(path: str | Path) -> Results:
    """A run dir, a sweep dir (or a boundary search's) or a results database (experiments.db) as DataFrames."""
    path = Path(path)
    if path.is_file():
        return _from_db(path)
    if not path.is_dir():
        raise ValueError(f"{path}: no such run dir, sweep dir or results database")
    if (path / "summary.json").is_file() or (path / "metrics.csv").is_file():
        return _from_run(path)
    if (path / "cells.json").is_file() or (path / "multirun.yaml").is_file():
        return _from_sweep(path)
    raise ValueError(f"{path}: not a run dir (summary.json), a sweep dir (cells.json) or a results database")
