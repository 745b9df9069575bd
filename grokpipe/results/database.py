"""Results database: one SQLite file built from any number of run dirs and sweep dirs.

Tables  experiments  one row per experiment group (the sweep/preset group): what is fixed, what is swept
        runs         one denormalised row per run dir: status, grok/memorise epochs, hyperparameters, fingerprint
        metrics      every metrics.csv row, PRIMARY KEY (run_id, epoch), WITHOUT ROWID
        crossings    per run and thresholded measure: the epoch it first crossed, and its lead over the grok
        builds       one row per build or update: when, from where, what changed
Views   run_summary, ratio_sweep_stats, phase_boundary, sweep_cells, experiment_overview (see docs/results.md)

Reads only the output contract (grokpipe.core.outputs): .hydra/config.yaml, summary.json, metrics.csv.
"""

from __future__ import annotations

import csv
import json
import os
import re
import sqlite3
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

import grokpipe.core.split as split
from grokpipe.core.cells import BOUNDARY, BOUNDARY_FIELDS, CELLS, PACK_DIRS, PACKS, SUCCESS, run_group, sweep_group
from grokpipe.core.outputs import read_metrics

SCHEMA_VERSION = 5  # 5: runs.split (the seed-aggregating views grouped by it), runs.coords, view sweep_cells
COLUMN_NAME = re.compile(r"[a-z][a-z0-9_]*")  # a measure's column, safe as an SQL name
# dirs below a run dir or a sweep dir that never hold runs: skipped by the walk
SKIP_DIRS = {"checkpoints", "wandb", "figures", "__pycache__"}
FINGERPRINT_FILES = ("summary.json", "metrics.csv", ".hydra/config.yaml", "provenance.json")

# hyperparameters: runs columns that say what an experiment fixed or swept
HYPER_COLUMNS = {
    "model": "TEXT",
    "d_model": "INTEGER",
    "ratio": "REAL",
    "op": "TEXT",
    "p": "INTEGER",
    "train_frac": "REAL",
    "split_seed": "INTEGER",
    "split": "TEXT",  # the split protocol (grokpipe.core.split): seed (the split follows the seed) or fixed
    "optimizer": "TEXT",
    "lr": "REAL",
    "wd": "REAL",
    "grokfast": "INTEGER",
    "seed": "INTEGER",
    "precision": "TEXT",
    "max_epochs": "INTEGER",
    "max_steps": "INTEGER",
    "unit": "TEXT",  # what the epoch-named columns count: epochs, or optimizer steps (train.max_steps)
}
# what produced the run (provenance.json, grokpipe.run.provenance): which runs ran on which commit, versions, device
PROVENANCE_COLUMNS = {
    "grokpipe_version": "TEXT",
    "git_commit": "TEXT",
    "git_dirty": "INTEGER",
    "python_version": "TEXT",
    "torch_version": "TEXT",
    "device_name": "TEXT",
    "cpu_flags": "TEXT",
    "threads": "INTEGER",
    "deterministic": "INTEGER",
    "command": "TEXT",
    "provenance": "TEXT",
}
RUN_COLUMNS = {
    "run_id": "TEXT PRIMARY KEY",
    "experiment": "TEXT NOT NULL",
    "sweep_dir": "TEXT",
    "cell": "INTEGER",
    "coords": "TEXT",  # the cell's coordinates in its sweep (cells.json: its swept keys but the seed), as JSON
    "status": "TEXT NOT NULL",
    "grokked": "INTEGER NOT NULL",
    "grok_epoch": "INTEGER",
    "memorized_epoch": "INTEGER",
    "grok_gap": "INTEGER",
    **HYPER_COLUMNS,
    "epochs_run": "INTEGER",
    "wall_seconds": "REAL",
    "n_params": "INTEGER",
    "device": "TEXT",
    "final_train_acc": "REAL",
    "final_val_acc": "REAL",
    "final_train_loss": "REAL",
    "final_val_loss": "REAL",
    "final_train_mae": "REAL",
    "final_val_mae": "REAL",
    "n_evals": "INTEGER",
    "error": "TEXT",
    **PROVENANCE_COLUMNS,
    "run_dir": "TEXT NOT NULL",
    "config": "TEXT",
    "fingerprint": "TEXT NOT NULL",
    "ingest_generation": "INTEGER NOT NULL",
}
_OK = f"({', '.join(repr(s) for s in SUCCESS)})"  # statuses that are a result, as in the sweep summary

SCHEMA = f"""
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE builds (
    generation INTEGER PRIMARY KEY, kind TEXT NOT NULL, at TEXT NOT NULL, root TEXT NOT NULL,
    ingested INTEGER NOT NULL, updated INTEGER NOT NULL, unchanged INTEGER NOT NULL, removed INTEGER NOT NULL
);
CREATE TABLE experiments (
    name TEXT PRIMARY KEY, kind TEXT NOT NULL, n_runs INTEGER NOT NULL,
    swept TEXT NOT NULL, fixed TEXT NOT NULL, sweep_dirs TEXT NOT NULL
);
CREATE TABLE runs ({", ".join(f"{k} {t}" for k, t in RUN_COLUMNS.items())});
CREATE INDEX runs_experiment ON runs (experiment);
CREATE INDEX runs_wd_ratio ON runs (wd, ratio);
CREATE INDEX runs_commit ON runs (git_commit);
CREATE TABLE metrics (
    run_id TEXT NOT NULL, epoch INTEGER NOT NULL, train_loss REAL, train_acc REAL, val_loss REAL, val_acc REAL,
    weight_norm REAL, lr REAL, elapsed REAL, PRIMARY KEY (run_id, epoch)
) WITHOUT ROWID;

-- per run and thresholded measure column: the first epoch it crossed its threshold (NULL: never), and how many
-- epochs before the grok that was (hidden_progress; NULL if either is missing)
CREATE TABLE crossings (
    run_id TEXT NOT NULL, measure TEXT NOT NULL, epoch INTEGER, hidden_progress INTEGER,
    PRIMARY KEY (run_id, measure)
) WITHOUT ROWID;

-- a boundary search's result (hydra/sweeper=boundary, its sweep dir's boundary.csv): per searched axis value
-- (mode ratio: a weight decay; mode wd: a ratio) the critical point, its bracket and what the search cost
CREATE TABLE boundary (
    experiment TEXT, sweep_dir TEXT NOT NULL, mode TEXT NOT NULL, axis REAL NOT NULL, critical REAL,
    bracket_lo REAL, bracket_hi REAL, status TEXT, seeds INTEGER, points INTEGER, runs INTEGER, run_epochs INTEGER,
    contradictions TEXT, PRIMARY KEY (sweep_dir, axis)
) WITHOUT ROWID;

CREATE VIEW run_summary AS
SELECT r.*, e.kind AS experiment_kind, e.n_runs AS experiment_runs, e.swept AS experiment_swept,
       e.fixed AS experiment_fixed
FROM runs r JOIN experiments e ON e.name = r.experiment;

-- the views that aggregate seeds keep the two split protocols apart: seeds on their own splits, seeds on one split
CREATE VIEW ratio_sweep_stats AS
SELECT experiment, wd, ROUND(ratio, 6) AS ratio, split, COUNT(*) AS n, SUM(grokked) AS n_grokked,
       SUM(status NOT IN {_OK}) AS n_failed,
       AVG(CASE WHEN grokked THEN grok_epoch END) AS grok_mean,
       MIN(CASE WHEN grokked THEN grok_epoch END) AS grok_min,
       MAX(CASE WHEN grokked THEN grok_epoch END) AS grok_max,
       AVG(grok_gap) AS gap_mean, MIN(grok_gap) AS gap_min, MAX(grok_gap) AS gap_max
FROM runs WHERE ratio IS NOT NULL
GROUP BY experiment, wd, ROUND(ratio, 6), split ORDER BY experiment, wd, ratio, split;

CREATE VIEW phase_boundary AS
SELECT wd, ROUND(ratio, 6) AS ratio, split, COUNT(*) AS n, SUM(grokked) AS n_grokked,
       SUM(status NOT IN {_OK}) AS n_failed,
       CAST(SUM(grokked) AS REAL) / COUNT(*) AS success_rate,
       CAST(SUM(grokked AND status IN {_OK}) AS REAL) / NULLIF(SUM(status IN {_OK}), 0) AS finished_success_rate,
       AVG(CASE WHEN grokked THEN grok_epoch END) AS grok_mean,
       MIN(CASE WHEN grokked THEN grok_epoch END) AS grok_min,
       MAX(CASE WHEN grokked THEN grok_epoch END) AS grok_max,
       COUNT(DISTINCT experiment) AS n_experiments
FROM runs WHERE ratio IS NOT NULL AND wd IS NOT NULL
GROUP BY wd, ROUND(ratio, 6), split ORDER BY wd, ratio, split;

-- any sweep by its own axes: one row per sweep dir x coordinates x split protocol, the seeds aggregated
CREATE VIEW sweep_cells AS
SELECT experiment, sweep_dir, coords, split, COUNT(*) AS n, SUM(grokked) AS n_grokked,
       SUM(status NOT IN {_OK}) AS n_failed,
       CAST(SUM(grokked AND status IN {_OK}) AS REAL) / NULLIF(SUM(status IN {_OK}), 0) AS share_grokked,
       AVG(CASE WHEN grokked THEN grok_epoch END) AS grok_mean,
       MIN(CASE WHEN grokked THEN grok_epoch END) AS grok_min,
       MAX(CASE WHEN grokked THEN grok_epoch END) AS grok_max,
       AVG(ratio) AS ratio, MIN(wd) AS wd
FROM runs WHERE coords IS NOT NULL
GROUP BY experiment, sweep_dir, coords, split ORDER BY experiment, sweep_dir, MIN(cell), split;

CREATE VIEW experiment_overview AS
SELECT e.name AS experiment, e.kind, e.swept, e.fixed, COUNT(r.run_id) AS n_runs,
       SUM(r.grokked) AS n_grokked, SUM(r.status NOT IN {_OK}) AS n_failed,
       MIN(CASE WHEN r.grokked THEN r.grok_epoch END) AS fastest_grok,
       MAX(CASE WHEN r.grokked THEN r.grok_epoch END) AS slowest_grok,
       AVG(CASE WHEN r.grokked THEN r.grok_epoch END) AS grok_mean,
       (SELECT x.run_id FROM runs x WHERE x.experiment = e.name AND x.grokked
        ORDER BY x.grok_epoch, x.run_id LIMIT 1) AS fastest_run,
       (SELECT x.run_id FROM runs x WHERE x.experiment = e.name AND x.grokked
        ORDER BY x.grok_epoch DESC, x.run_id LIMIT 1) AS slowest_run,
       SUM(r.n_evals) AS n_metrics, SUM(r.wall_seconds) AS wall_seconds
FROM experiments e LEFT JOIN runs r ON r.experiment = e.name
GROUP BY e.name ORDER BY e.name;
"""


@dataclass
class Report:
    """What one build or update did, and the row counts after it."""

    db_path: Path
    kind: str
    ingested: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: int = 0
    removed: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def __str__(self) -> str:
        rows = ", ".join(f"{k} {v}" for k, v in self.counts.items())
        return "\n".join(
            [
                f"{self.kind}: {self.db_path}",
                f"  runs ingested {len(self.ingested)}, updated {len(self.updated)}, "
                f"unchanged {self.unchanged}, removed {len(self.removed)}",
                f"  rows: {rows}",
            ]
        )


def find_run_dirs(root: Path) -> list[Path]:
    """Every dir under root (root included) holding summary.json or .hydra/config.yaml; run dirs are not entered,
    nor a packed sweep's pack job dirs (packs/<k>: a job's config and log, its members' runs being the cells)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if "summary.json" in filenames or (here / ".hydra" / "config.yaml").is_file():
            found.append(here)
            dirnames[:] = []
            continue
        skip = SKIP_DIRS | ({PACK_DIRS} if PACKS in filenames else set())
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in skip)
    return sorted(found)


def fingerprint(run_dir: Path) -> str:
    """mtime and size of the files a row is made from: any rewrite of them changes it."""
    parts = []
    for name in FINGERPRINT_FILES:
        try:
            st = (run_dir / name).stat()
            parts.append(f"{name}:{st.st_mtime_ns}:{st.st_size}")
        except FileNotFoundError:
            parts.append(f"{name}:-")
    return "|".join(parts)


def run_id(run_dir: Path, root: Path) -> str:
    """The run dir relative to the results root: stable across builds and machines."""
    return root.name if run_dir == root else run_dir.relative_to(root).as_posix()


def _sweep_dir(run_dir: Path, root: Path) -> Path | None:
    """The nearest ancestor holding multirun.yaml: the parent, or any dir up to the results root."""
    candidates = [run_dir.parent] + [d for d in run_dir.parents if d == root or root in d.parents]
    return next((d for d in candidates if (d / "multirun.yaml").is_file()), None)


def _load_yaml(path: Path) -> DictConfig | None:
    try:
        return OmegaConf.load(path)
    except Exception:  # a torn or foreign file: the row is still made from what else is there
        return None


def experiment_name(cfg: DictConfig | None, sweep_dir: Path | None) -> str:
    """The W&B group: logger.group if set, else `sweep-<parent>_<name>` for a sweep, else
    grokpipe.core.cells.run_group."""
    if sweep_dir is not None:
        master = _load_yaml(sweep_dir / "multirun.yaml")
        group = OmegaConf.select(master, "logger.group", default=None) if master is not None else None
        return str(group) if group else sweep_group(sweep_dir)
    if cfg is None:
        return "unknown"
    group = OmegaConf.select(cfg, "logger.group", default=None)
    return str(group) if group else run_group(cfg.task)


def _from_config(cfg: DictConfig) -> dict:
    """What a run's hyperparameters were, from its composed config: for cells that failed before a summary."""
    from grokpipe.config.validate import apply_ratio, task_size
    from grokpipe.core.errors import ConfigError

    cfg = cfg.copy()
    try:
        apply_ratio(cfg)  # d_model as the run would have derived it from model.ratio
    except (ConfigError, KeyError, TypeError):
        pass
    sel = lambda key: OmegaConf.select(cfg, key, default=None)  # noqa: E731
    d_model = sel("model.d_model")
    try:
        ratio = d_model / task_size(cfg)
    except Exception:  # an incomplete or odd config: leave the ratio unknown
        ratio = None
    return {
        "model": sel("model.name"),
        "d_model": d_model,
        "ratio": ratio,
        "op": sel("task.op") or sel("task.name"),
        "p": sel("task.p"),
        "train_frac": sel("task.train_frac"),
        "split_seed": sel("task.split_seed"),
        "split": split.of_config(cfg.task) if "task" in cfg else None,
        "optimizer": sel("optim.name"),
        "lr": sel("optim.lr"),
        "wd": sel("optim.wd"),
        "grokfast": sel("optim.grokfast.enabled"),
        "seed": sel("train.seed"),
        "precision": sel("train.precision"),
        "max_epochs": sel("train.max_epochs"),
        "max_steps": sel("train.max_steps"),
        "unit": "steps" if sel("train.max_steps") is not None else "epochs",
    }


def _config_json(cfg: DictConfig | None) -> str | None:
    if cfg is None:
        return None
    try:
        container = OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # an interpolation that cannot resolve outside Hydra: keep it as written
        container = OmegaConf.to_container(cfg, resolve=False)
    return json.dumps(container, sort_keys=True)


def read_run(run_dir: Path, root: Path, experiments: dict[Path | None, str] | None = None) -> tuple[dict, list[dict]]:
    """One runs row and the metrics rows of a run dir. `experiments` caches sweep dir -> experiment name."""
    cfg = _load_yaml(run_dir / ".hydra" / "config.yaml")
    sweep = _sweep_dir(run_dir, root)
    experiments = {} if experiments is None else experiments
    if sweep is None or sweep not in experiments:
        name = experiment_name(cfg, sweep)
        if sweep is not None:
            experiments[sweep] = name
    else:
        name = experiments[sweep]

    summary_path = run_dir / "summary.json"
    summary: dict = {"status": "missing", "error": "no summary.json: the job never ran, was killed or is still running"}
    if summary_path.exists():
        try:
            summary = json.loads(summary_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            summary = {"status": "unreadable", "error": f"summary.json: {exc}"}
    try:
        metrics = read_metrics(run_dir / "metrics.csv") if (run_dir / "metrics.csv").exists() else []
    except (OSError, ValueError) as exc:  # damaged or not a file: the run's row from its summary, no curve
        print(f"warning: {run_dir / 'metrics.csv'} left out: {exc}", file=sys.stderr)
        metrics = []

    rid = run_id(run_dir, root)
    prov = summary.get("provenance") if isinstance(summary.get("provenance"), dict) else _read_provenance(run_dir)
    hyper = _from_config(cfg) if cfg is not None else dict.fromkeys(HYPER_COLUMNS)
    hyper.update({k: summary[k] for k in HYPER_COLUMNS if summary.get(k) is not None})
    grok, memo = summary.get("grok_epoch"), summary.get("memorized_epoch")
    last = metrics[-1] if metrics else {}
    row = {
        "run_id": rid,
        "experiment": name,
        "sweep_dir": run_id(sweep, root) if sweep is not None and (sweep == root or root in sweep.parents) else None,
        "cell": int(run_dir.name) if sweep is not None and run_dir.name.isdigit() else None,
        "coords": _cell_coords(sweep, run_dir, experiments) if sweep is not None else None,
        "status": summary.get("status") or "unknown",
        "grokked": int(bool(summary.get("grokked", grok is not None))),
        "grok_epoch": grok,
        "memorized_epoch": memo,
        "grok_gap": grok - memo if grok is not None and memo is not None else None,
        **hyper,
        "grokfast": None if hyper.get("grokfast") is None else int(bool(hyper["grokfast"])),
        "epochs_run": summary.get("epochs_run", last.get("epoch")),
        "wall_seconds": summary.get("wall_seconds"),
        "n_params": summary.get("n_params"),
        "device": summary.get("device"),
        "final_train_acc": summary.get("final_train_acc", last.get("train_acc")),
        "final_val_acc": summary.get("final_val_acc", last.get("val_acc")),
        "final_train_loss": summary.get("final_train_loss", last.get("train_loss")),
        "final_val_loss": summary.get("final_val_loss", last.get("val_loss")),
        "final_train_mae": summary.get("final_train_mae", last.get("train_mae")),
        "final_val_mae": summary.get("final_val_mae", last.get("val_mae")),
        "n_evals": len(metrics),
        "error": summary.get("error"),
        **_provenance_columns(prov),
        "run_dir": str(run_dir),
        "config": _config_json(cfg),
        "fingerprint": fingerprint(run_dir),
        # not runs columns: the crossings table's rows
        "crossed": summary.get("crossed") if isinstance(summary.get("crossed"), dict) else None,
        "hidden_progress": summary.get("hidden_progress") if isinstance(summary.get("hidden_progress"), dict) else None,
    }
    return row, [{"run_id": rid, **m} for m in metrics]


def _cell_coords(sweep: Path, run_dir: Path, cache: dict) -> str | None:
    """The run's coordinates in its sweep (its cells.json entry), as JSON; None for a sweep from before they were
    recorded. `cache` keeps each sweep's manifest, read once."""
    key = ("coords", sweep)
    if key not in cache:
        try:
            manifest = json.loads((sweep / CELLS).read_text())
            cache[key] = {Path(e["dir"]).name: e["coords"] for e in manifest if isinstance(e.get("coords"), dict)}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            cache[key] = {}
    coords = cache[key].get(run_dir.name)
    return None if coords is None else json.dumps(coords)


def _check_root(root: Path) -> list[Path]:
    if not root.exists():
        raise ValueError(f"{root}: no such directory")
    if not root.is_dir():
        raise ValueError(f"{root}: not a directory")
    dirs = find_run_dirs(root)
    if not dirs:
        raise ValueError(f"{root}: no runs found (no directory below it holds summary.json or .hydra/config.yaml)")
    return dirs


def _read_provenance(run_dir: Path) -> dict | None:
    try:
        prov = json.loads((run_dir / "provenance.json").read_text())
    except (OSError, ValueError):
        return None
    return prov if isinstance(prov, dict) else None


def _provenance_columns(prov: dict | None) -> dict:
    """The runs columns of a provenance (all NULL without one: a run from before it was recorded)."""
    if not prov:
        return dict.fromkeys(PROVENANCE_COLUMNS)
    flag = lambda v: None if v is None else int(bool(v))  # noqa: E731
    return {
        "grokpipe_version": prov.get("grokpipe_version"),
        "git_commit": prov.get("commit"),
        "git_dirty": flag(prov.get("dirty")),
        "python_version": prov.get("python"),
        "torch_version": (prov.get("packages") or {}).get("torch"),
        "device_name": prov.get("device_name"),
        "cpu_flags": " ".join(prov.get("cpu_flags") or []),
        "threads": prov.get("threads"),
        "deterministic": flag((prov.get("determinism") or {}).get("deterministic_algorithms")),
        "command": prov.get("command"),
        "provenance": json.dumps(prov, sort_keys=True),
    }


def _insert_run(con: sqlite3.Connection, row: dict, metrics: list[dict], generation: int) -> None:
    row = {**row, "ingest_generation": generation}
    cols = list(RUN_COLUMNS)
    updates = ", ".join(f"{c} = excluded.{c}" for c in cols if c != "run_id")
    # upsert keeps the rowid of a re-ingested run: rows are updated in place, never renumbered
    con.execute(
        f"INSERT INTO runs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
        f"ON CONFLICT(run_id) DO UPDATE SET {updates}",
        [row.get(c) for c in cols],
    )
    con.execute("DELETE FROM metrics WHERE run_id = ?", (row["run_id"],))
    con.execute("DELETE FROM crossings WHERE run_id = ?", (row["run_id"],))
    lead = row.get("hidden_progress") or {}
    con.executemany(
        "INSERT INTO crossings (run_id, measure, epoch, hidden_progress) VALUES (?, ?, ?, ?)",
        [(row["run_id"], k, e, lead.get(k)) for k, e in (row.get("crossed") or {}).items()],
    )
    fields = ("run_id", *_metric_columns(con, metrics))
    quoted = ", ".join(f'"{f}"' for f in fields)
    con.executemany(
        f"INSERT OR REPLACE INTO metrics ({quoted}) VALUES ({', '.join('?' * len(fields))})",
        [[m.get(f) for f in fields] for m in metrics],
    )


def _metric_columns(con: sqlite3.Connection, metrics: list[dict]) -> list[str]:
    """The metrics table's columns, grown by every measure column these rows bring (the enabled measures decide
    metrics.csv's columns); a run written before a column existed holds NULL there."""
    have = [r[1] for r in con.execute("PRAGMA table_info(metrics)")]
    for name in dict.fromkeys(k for m in metrics for k in m):
        if name not in have and COLUMN_NAME.fullmatch(name):
            con.execute(f'ALTER TABLE metrics ADD COLUMN "{name}" REAL')
            have.append(name)
    return [c for c in have if c != "run_id"]


def _json_value(v):
    return round(v, 6) if isinstance(v, float) else v


def _refresh_experiments(con: sqlite3.Connection) -> None:
    """experiments is derived from runs: rebuilt whole, so it is the same however the runs got there."""
    con.execute("DELETE FROM experiments")
    cols = ["experiment", "sweep_dir", *HYPER_COLUMNS]
    groups: dict[str, list[dict]] = {}
    for values in con.execute(f"SELECT {', '.join(cols)} FROM runs ORDER BY run_id"):
        rec = dict(zip(cols, values))
        groups.setdefault(rec["experiment"], []).append(rec)
    for name, members in sorted(groups.items()):
        swept, fixed = {}, {}
        for key in HYPER_COLUMNS:
            seen = sorted({_json_value(m[key]) for m in members if m[key] is not None}, key=lambda v: (str(type(v)), v))
            if len(seen) > 1:
                swept[key] = seen
            elif seen:
                fixed[key] = seen[0]
        sweeps = sorted({m["sweep_dir"] for m in members if m["sweep_dir"] is not None})
        n_single = sum(m["sweep_dir"] is None for m in members)
        kind = "sweep" if not n_single else ("single" if not sweeps else "mixed")
        con.execute(
            "INSERT INTO experiments VALUES (?, ?, ?, ?, ?, ?)",
            (name, kind, len(members), json.dumps(swept, sort_keys=True), json.dumps(fixed, sort_keys=True),
             json.dumps(sweeps)),
        )  # fmt: skip


def _refresh_boundaries(con: sqlite3.Connection, root: Path) -> None:
    """The boundary table from the boundary.csv of every sweep dir the runs came from."""
    con.execute("DELETE FROM boundary")
    sweeps = [r[0] for r in con.execute("SELECT DISTINCT sweep_dir FROM runs WHERE sweep_dir IS NOT NULL")]
    for sweep in sweeps:
        path = (root / sweep if (root / sweep).is_dir() or sweep != root.name else root) / BOUNDARY
        if not path.is_file():
            continue
        (experiment,) = con.execute("SELECT MIN(experiment) FROM runs WHERE sweep_dir = ?", (sweep,)).fetchone()
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        cols = ("experiment", "sweep_dir", *BOUNDARY_FIELDS)
        con.executemany(
            f"INSERT OR REPLACE INTO boundary ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
            [[experiment, sweep, *(r.get(k) or None for k in BOUNDARY_FIELDS)] for r in rows],
        )


def counts(con: sqlite3.Connection) -> dict[str, int]:
    return {t: con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("experiments", "runs", "metrics")}


def _log_build(con: sqlite3.Connection, report: Report, generation: int, root: Path) -> None:
    at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    con.execute(
        "INSERT INTO builds VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (generation, report.kind, at, str(root), len(report.ingested), len(report.updated), report.unchanged,
         len(report.removed)),
    )  # fmt: skip


def build(root: Path | str, db_path: Path | str | None = None) -> Report:
    """A clean build of the database (default root/experiments.db) from every run dir under root."""
    root = Path(root).resolve()
    dirs = _check_root(root)
    db_path = Path(db_path) if db_path is not None else root / "experiments.db"
    db_path.parent.mkdir(parents=True, exist_ok=True)
    # built aside and renamed: a reader never sees half a database, a failed build leaves the old one
    tmp = db_path.with_name(f".{db_path.name}.tmp")
    tmp.unlink(missing_ok=True)
    report = Report(db_path, "build")
    con = sqlite3.connect(tmp)
    try:
        con.executescript(SCHEMA)
        con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        con.execute("INSERT INTO meta VALUES ('root', ?)", (str(root),))
        cache: dict = {}
        for d in dirs:
            row, metrics = read_run(d, root, cache)
            _insert_run(con, row, metrics, generation=1)
            report.ingested.append(row["run_id"])
        _refresh_experiments(con)
        _refresh_boundaries(con, root)
        _log_build(con, report, 1, root)
        con.commit()
        report.counts = counts(con)
    except BaseException:
        con.close()
        tmp.unlink(missing_ok=True)
        raise
    con.close()
    os.replace(tmp, db_path)
    return report


def update(root: Path | str, db_path: Path | str | None = None) -> Report:
    """Re-ingest the runs whose fingerprint changed, add new ones, drop vanished ones; others stay as they are."""
    root = Path(root).resolve()
    dirs = _check_root(root)
    db_path = Path(db_path) if db_path is not None else root / "experiments.db"
    if not db_path.exists():
        return build(root, db_path)
    con = sqlite3.connect(db_path)
    try:
        try:
            version = con.execute("PRAGMA user_version").fetchone()[0]
            meta = con.execute("SELECT value FROM meta WHERE key = 'root'").fetchone()
        except sqlite3.DatabaseError as exc:
            raise ValueError(f"{db_path}: not a grokpipe results database ({exc})") from None
        if meta is None:
            raise ValueError(f"{db_path}: not a grokpipe results database (no root in its meta table)")
        built_from = meta[0]
        if version != SCHEMA_VERSION:
            raise ValueError(f"{db_path}: schema version {version}, expected {SCHEMA_VERSION}; build it again")
        if built_from != str(root):
            raise ValueError(f"{db_path}: built from {built_from}, not {root}; build it again without --update")
        known = dict(con.execute("SELECT run_id, fingerprint FROM runs"))
        generation = con.execute("SELECT MAX(generation) FROM builds").fetchone()[0] + 1
        report = Report(db_path, "update")
        cache: dict = {}
        seen = set()
        for d in dirs:
            rid = run_id(d, root)
            seen.add(rid)
            if known.get(rid) == fingerprint(d):
                report.unchanged += 1
                continue
            row, metrics = read_run(d, root, cache)
            _insert_run(con, row, metrics, generation)
            (report.updated if rid in known else report.ingested).append(rid)
        report.removed = sorted(set(known) - seen)
        for rid in report.removed:
            con.execute("DELETE FROM runs WHERE run_id = ?", (rid,))
            con.execute("DELETE FROM metrics WHERE run_id = ?", (rid,))
            con.execute("DELETE FROM crossings WHERE run_id = ?", (rid,))
        _refresh_experiments(con)
        _refresh_boundaries(con, root)
        _log_build(con, report, generation, root)
        con.commit()
        report.counts = counts(con)
    finally:
        con.close()
    return report


def build_sweep_db(sweep_dir: Path) -> Path:
    """The end-of-sweep hook: sweep_dir/experiments.db from the sweep's cells, and its figures in sweep_dir/figures/."""
    from grokpipe.results.figures import write_figures

    sweep_dir = Path(sweep_dir)
    report = build(sweep_dir, sweep_dir / "experiments.db")
    write_figures(report.db_path, sweep_dir / "figures")
    return report.db_path
