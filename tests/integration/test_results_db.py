"""The results database, built from real sweeps: row counts, rows against summary.json, views against statistics
computed directly from the run dirs, clean builds that repeat exactly, incremental updates, bad input."""

from __future__ import annotations

import csv
import json
import shutil
import sqlite3
import statistics
from pathlib import Path

import pytest
from helpers import TINY, launch, run_script, script

from grokpipe.core.cells import sweep_group
from grokpipe.results.database import build, build_sweep_db, update

# the results database, figure and predict tests run on one xdist worker (pytest -n, --dist loadgroup): they
# read the same two sweeps (the results_root fixture), made once
pytestmark = pytest.mark.xdist_group("results_sweeps")

TABLES = ("experiments", "runs", "metrics")
VIEWS = ("run_summary", "ratio_sweep_stats", "phase_boundary", "sweep_cells", "experiment_overview")


def rows(db: Path, table: str, order: str = "") -> list[tuple]:
    with sqlite3.connect(db) as con:
        return con.execute(f"SELECT * FROM {table} {order}").fetchall()


def dicts(db: Path, sql: str, args: tuple = ()) -> list[dict]:
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute(sql, args)]
    finally:
        con.close()


def cell_dirs(root: Path) -> list[Path]:
    return sorted(d for d in (root / "multirun").glob("*/*") if d.name.isdigit())


def summaries(root: Path) -> dict[str, dict]:
    return {d.relative_to(root).as_posix(): json.loads((d / "summary.json").read_text()) for d in cell_dirs(root)}


@pytest.fixture(scope="module")
def root(results_root) -> Path:
    return results_root


@pytest.fixture(scope="module")
def db(root, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("db") / "experiments.db"
    build(root, path)
    return path


def test_one_runs_row_per_run_dir_and_one_metrics_row_per_csv_row(root, db):
    dirs = cell_dirs(root)
    assert len(dirs) == 12
    # the tiny sweep (d_model 8 and 16) trained as packs (pack=true): their job dirs packs/<k> are not runs
    assert (root / "multirun" / "tiny" / "packs.json").is_file() and (root / "multirun" / "tiny" / "packs").is_dir()
    assert sorted(r[0] for r in rows(db, "runs")) == sorted(d.relative_to(root).as_posix() for d in dirs)
    for d in dirs:
        csv_rows = list(csv.DictReader(open(d / "metrics.csv"))) if (d / "metrics.csv").is_file() else []
        rid = d.relative_to(root).as_posix()
        in_db = dicts(db, "SELECT epoch, val_acc FROM metrics WHERE run_id = ? ORDER BY epoch", (rid,))
        assert [m["epoch"] for m in in_db] == [int(r["epoch"]) for r in csv_rows]
        assert [m["val_acc"] for m in in_db] == pytest.approx([float(r["val_acc"]) for r in csv_rows])
        (run,) = dicts(db, "SELECT n_evals FROM runs WHERE run_id = ?", (rid,))
        assert run["n_evals"] == len(csv_rows)
    assert len(rows(db, "metrics")) == sum(r["n_evals"] for r in dicts(db, "SELECT n_evals FROM runs")) > 100


def test_runs_rows_hold_each_summary_and_failed_cells_what_their_config_says(root, db):
    got = {r["run_id"]: r for r in dicts(db, "SELECT * FROM runs")}
    for rid, s in summaries(root).items():
        r = got[rid]
        assert r["status"] == s["status"]
        if s["status"] == "failed":  # what summary.json lacks comes from .hydra/config.yaml
            assert r["error"] == s["error"] and r["n_evals"] == 0
            assert (r["model"], r["d_model"], r["p"], r["wd"], r["lr"]) == ("mlp", 64, 59, 1.0, 0.01)
            assert r["ratio"] == pytest.approx(64 / 59) and r["seed"] in (4, 5) and r["grokked"] == 0
            assert r["error"].startswith("IsADirectoryError: ")
            continue
        for key in ("grok_epoch", "memorized_epoch", "d_model", "p", "op", "seed", "epochs_run", "model"):
            assert r[key] == s[key], key
        for key in ("ratio", "wd", "lr", "final_val_acc", "final_train_acc", "wall_seconds"):
            assert r[key] == pytest.approx(s[key]), key
        assert r["grokked"] == int(s["grokked"]) and r["cell"] == int(rid.rsplit("/", 1)[1])
    assert {r["experiment"] for r in got.values()} == {"sweep-multirun_tiny", "fast_grok"}
    assert sum(r["grokked"] for r in got.values()) == 2


def test_a_failed_cell_with_only_status_and_error_gets_its_row_from_the_config(root, tmp_path):
    sweep = tmp_path / "sw"
    shutil.copytree(root / "multirun" / "grok", sweep)
    (sweep / "3" / "summary.json").write_text(json.dumps({"status": "failed", "error": "Killed: out of memory"}))
    shutil.rmtree(sweep / "2")  # no summary at all: the cell's config still makes a row
    (sweep / "2" / ".hydra").mkdir(parents=True)
    shutil.copy(sweep / "0" / ".hydra" / "config.yaml", sweep / "2" / ".hydra" / "config.yaml")
    build(sweep)
    got = {r["run_id"]: r for r in dicts(sweep / "experiments.db", "SELECT * FROM runs")}
    three, two = got["3"], got["2"]
    assert (three["status"], three["error"]) == ("failed", "Killed: out of memory")
    assert (three["grokked"], three["grok_epoch"], three["model"], three["d_model"], three["p"]) == (
        0,
        None,
        "mlp",
        64,
        59,
    )
    assert (three["wd"], three["lr"], three["seed"]) == (1.0, 0.01, 5)
    assert three["ratio"] == pytest.approx(64 / 59) and three["experiment"] == "fast_grok"
    assert two["status"] == "missing" and "no summary.json" in two["error"] and two["seed"] == 2


def test_experiments_say_what_was_swept_and_what_was_fixed(db):
    exp = {r["name"]: r for r in dicts(db, "SELECT * FROM experiments")}
    tiny, grok = exp["sweep-multirun_tiny"], exp["fast_grok"]
    # the split follows the seed (the default protocol): its seed is swept with the run's seed
    assert set(json.loads(tiny["swept"])) == {"d_model", "ratio", "wd", "seed", "split_seed"}
    assert json.loads(tiny["swept"])["wd"] == [0.1, 1.0] and json.loads(tiny["fixed"])["p"] == 23
    assert json.loads(tiny["fixed"])["split"] == json.loads(grok["fixed"])["split"] == "seed"
    assert json.loads(grok["swept"]) == {"seed": [2, 3, 4, 5], "split_seed": [2, 3, 4, 5]}
    assert json.loads(grok["fixed"])["lr"] == 0.01
    assert (tiny["n_runs"], grok["n_runs"], tiny["kind"]) == (8, 4, "sweep")
    assert json.loads(grok["sweep_dirs"]) == ["multirun/grok"]


def _expected_stats(root: Path) -> dict[tuple, dict]:
    """Per experiment x wd x ratio, straight from summary.json (failed cells from their config)."""
    out: dict[tuple, list] = {}
    for rid, s in summaries(root).items():
        exp = "fast_grok" if rid.startswith("multirun/grok") else "sweep-multirun_tiny"
        key = (exp, s.get("wd", 1.0), round(s.get("ratio", 64 / 59), 6))
        out.setdefault(key, []).append(s)
    return out


def test_ratio_sweep_stats_equal_statistics_of_the_summaries(root, db):
    view = {(r["experiment"], r["wd"], r["ratio"]): r for r in dicts(db, "SELECT * FROM ratio_sweep_stats")}
    expected = _expected_stats(root)
    assert set(view) == set(expected)
    for key, members in expected.items():
        epochs = [s["grok_epoch"] for s in members if s.get("grokked")]
        v = view[key]
        assert v["n"] == len(members) and v["n_grokked"] == len(epochs)
        assert v["n_failed"] == sum(s["status"] == "failed" for s in members)
        if epochs:
            assert v["grok_mean"] == pytest.approx(statistics.fmean(epochs))
            assert (v["grok_min"], v["grok_max"]) == (min(epochs), max(epochs))
            gaps = [s["grok_epoch"] - s["memorized_epoch"] for s in members if s.get("grokked")]
            assert (v["gap_min"], v["gap_max"]) == (min(gaps), max(gaps))
        else:
            assert v["grok_mean"] is None and v["grok_min"] is None
    grok = view[("fast_grok", 1.0, round(64 / 59, 6))]
    assert grok["grok_min"] < grok["grok_max"]  # the seeds grok at different epochs: min/max are not one value


def test_phase_boundary_rates_equal_the_summaries(root, db):
    by_cell: dict[tuple, list] = {}
    for (_, wd, ratio), members in _expected_stats(root).items():
        by_cell.setdefault((wd, ratio), []).extend(members)
    view = {(r["wd"], r["ratio"]): r for r in dicts(db, "SELECT * FROM phase_boundary")}
    assert set(view) == set(by_cell)
    for key, members in by_cell.items():
        grokked = sum(bool(s.get("grokked")) for s in members)
        finished = sum(s["status"] in ("grokked", "completed") for s in members)
        assert view[key]["success_rate"] == pytest.approx(grokked / len(members))
        assert view[key]["finished_success_rate"] == pytest.approx(grokked / finished)
    assert view[(1.0, round(64 / 59, 6))]["success_rate"] == pytest.approx(0.5)


def test_the_views_keep_the_two_split_protocols_apart(root, tmp_path):
    """The tiny sweep as it ran (seeds on their own splits) beside a copy whose runs say they shared split 0: the
    views that aggregate seeds give each protocol its own rows, each with the sweep's own counts."""
    tiny = next(d for d in (root / "multirun").iterdir() if d.name == "tiny")
    shutil.copytree(tiny, tmp_path / "r" / "by_seed")
    shutil.copytree(tiny, tmp_path / "r" / "fixed")
    for path in (tmp_path / "r" / "fixed").glob("*/summary.json"):
        path.write_text(json.dumps({**json.loads(path.read_text()), "split": "fixed", "split_seed": 0}))
    build(tmp_path / "r", tmp_path / "x.db")
    view = dicts(tmp_path / "x.db", "SELECT * FROM phase_boundary")
    assert sorted({r["split"] for r in view}) == ["fixed", "seed"]
    assert len(view) == 2 * len({(r["wd"], r["ratio"]) for r in view}) == 8
    for r in view:
        twin = next(x for x in view if (x["wd"], x["ratio"]) == (r["wd"], r["ratio"]) and x["split"] != r["split"])
        assert (r["n"], r["n_grokked"]) == (twin["n"], twin["n_grokked"]) == (2, r["n_grokked"])
    stats = dicts(tmp_path / "x.db", "SELECT split, COUNT(*) AS rows FROM ratio_sweep_stats GROUP BY split")
    assert {r["split"]: r["rows"] for r in stats} == {"fixed": 4, "seed": 4}


def test_experiment_overview_and_run_summary(root, db):
    over = {r["experiment"]: r for r in dicts(db, "SELECT * FROM experiment_overview")}
    grok = {rid: s for rid, s in summaries(root).items() if s.get("grokked")}
    fastest = min(grok, key=lambda rid: grok[rid]["grok_epoch"])
    slowest = max(grok, key=lambda rid: grok[rid]["grok_epoch"])
    g = over["fast_grok"]
    assert (g["n_runs"], g["n_grokked"], g["n_failed"]) == (4, 2, 2)
    assert (g["fastest_grok"], g["slowest_grok"]) == (grok[fastest]["grok_epoch"], grok[slowest]["grok_epoch"])
    assert (g["fastest_run"], g["slowest_run"]) == (fastest, slowest)
    t = over["sweep-multirun_tiny"]
    assert (t["n_runs"], t["n_grokked"], t["fastest_grok"]) == (8, 0, None)
    summary = dicts(db, "SELECT run_id, grokked, experiment_kind, experiment_runs FROM run_summary")
    assert len(summary) == 12 and {r["run_id"] for r in summary if r["grokked"]} == set(grok)
    assert all(r["grokked"] in (0, 1) for r in summary) and {r["experiment_runs"] for r in summary} == {4, 8}


def test_building_twice_gives_identical_rows(root, db, tmp_path):
    again = tmp_path / "again.db"
    report = build(root, again)
    assert report.counts == {"experiments": 2, "runs": 12, "metrics": len(rows(db, "metrics"))}
    for name in TABLES + VIEWS:
        order = "ORDER BY 1, 2" if name != "experiment_overview" else ""
        assert rows(again, name, order) == rows(db, name, order), name
    # rowids too: runs are inserted in run_id order
    assert rows(again, "runs", "ORDER BY rowid") == rows(db, "runs", "ORDER BY rowid")


def test_update_adds_new_runs_reingests_changed_ones_and_leaves_the_rest(root, tmp_path, capsys):
    work = tmp_path / "results"
    shutil.copytree(root / "multirun", work / "multirun")
    assert script("build_db").main([str(work)]) == 0
    out = capsys.readouterr().out
    assert "runs ingested 12, updated 0, unchanged 0" in out and "runs 12" in out
    db = work / "experiments.db"
    before = {row[0]: row[1:] for row in _with_rowid(db)}

    # a single run appears (outputs/DATE/TIME) and one cell's summary is rewritten with a new value
    single = work / "outputs" / "2026-01-01" / "00-00-00"
    shutil.copytree(work / "multirun" / "tiny" / "0", single)
    config = single / ".hydra" / "config.yaml"  # a packed cell's config names its sweep's group; a run alone's not
    group = sweep_group(str(work / "multirun" / "tiny"))
    config.write_text(config.read_text().replace(f"group: {group}", "group: null"))
    changed = work / "multirun" / "tiny" / "5" / "summary.json"
    s = json.loads(changed.read_text())
    changed.write_text(json.dumps({**s, "wall_seconds": 123.5}))
    r = run_script("build_db", work, "--update")
    assert r.returncode == 0, r.stderr
    assert "runs ingested 1, updated 1, unchanged 11, removed 0" in r.stdout and "runs 13" in r.stdout

    after = {row[0]: row[1:] for row in _with_rowid(db)}
    new_id = "outputs/2026-01-01/00-00-00"
    assert set(after) - set(before) == {new_id}
    for rid in before:
        if rid != "multirun/tiny/5":
            assert after[rid] == before[rid], rid  # same rowid, generation, fingerprint, every column
    rowid, generation, wall = after["multirun/tiny/5"][:3]
    assert (rowid, generation, wall) == (before["multirun/tiny/5"][0], 2, 123.5)
    (new,) = dicts(db, "SELECT * FROM runs WHERE run_id = ?", (new_id,))
    assert (new["experiment"], new["sweep_dir"], new["cell"], new["ingest_generation"]) == ("add-p23", None, None, 2)
    assert len(dicts(db, "SELECT epoch FROM metrics WHERE run_id = ?", (new_id,))) == new["n_evals"] == 6
    assert dicts(db, "SELECT kind FROM experiments WHERE name = 'add-p23'") == [{"kind": "single"}]

    # nothing changed: nothing re-read; a vanished run dir leaves the database with its metrics
    shutil.rmtree(single)
    report = update(work)
    assert (report.ingested, report.updated, report.unchanged, report.removed) == ([], [], 12, [new_id])
    assert dicts(db, "SELECT COUNT(*) AS n FROM metrics WHERE run_id = ?", (new_id,)) == [{"n": 0}]


def _with_rowid(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as con:
        return con.execute("SELECT run_id, rowid, ingest_generation, wall_seconds, * FROM runs").fetchall()


def test_update_refuses_a_database_built_from_another_root(root, tmp_path):
    (tmp_path / "a").mkdir()
    shutil.copytree(root / "multirun" / "tiny" / "0", tmp_path / "a" / "run")
    shutil.copytree(root / "multirun" / "tiny" / "1", tmp_path / "b" / "run")
    build(tmp_path / "a", tmp_path / "x.db")
    with pytest.raises(ValueError, match=r"built from .*/a, not .*/b; build it again"):
        update(tmp_path / "b", tmp_path / "x.db")


@pytest.mark.parametrize("kind", ["missing", "empty", "file"])
def test_bad_results_dir_is_one_line_naming_the_path(kind, tmp_path):
    path = {"missing": tmp_path / "nope", "empty": tmp_path, "file": tmp_path / "f.txt"}[kind]
    if kind == "file":
        path.write_text("x")
    (tmp_path / "just_a_dir" / "wandb").mkdir(parents=True)  # dirs without runs do not count as runs
    expected = {"missing": "no such directory", "empty": "no runs found", "file": "not a directory"}[kind]
    with pytest.raises(ValueError, match=expected):
        build(path)
    with pytest.raises(SystemExit) as exit_:
        script("build_db").main([str(path)])
    assert exit_.value.code == 2
    r = run_script("build_db", path, "--update") if kind == "missing" else None
    if r is not None:
        assert r.returncode == 2 and r.stderr.splitlines() == [f"error: {path}: no such directory"]
        assert r.stdout == ""


def test_sweep_hook_builds_the_sweeps_database_and_figures(root, tmp_path):
    sweep = tmp_path / "grok"
    shutil.copytree(root / "multirun" / "grok", sweep)
    path = build_sweep_db(sweep)
    assert path == sweep / "experiments.db"
    assert sorted(r[0] for r in rows(path, "runs")) == ["0", "1", "2", "3"]
    assert dicts(path, "SELECT name, n_runs FROM experiments") == [{"name": "fast_grok", "n_runs": 4}]
    figures = sorted(p.name for p in (sweep / "figures").iterdir())
    aggregate = ["phase_diagram", "grok_vs_ratio", "grok_gap", "hidden_progress"]
    per_experiment = [f"{k}_fast_grok" for k in ("curves", "weight_norm", "measures")]
    assert figures == sorted(f"{n}.png" for n in aggregate + per_experiment)


def test_metric_columns_follow_the_measures_and_old_rows_load_as_null(tmp_path):
    """Runs with different measures share one metrics table: a column a run did not measure is NULL there,
    and a metrics.csv written before a column existed (another column order, one column fewer) still loads."""
    runs = tmp_path / "runs"
    for name, measures in (("all", "[loss,task_metrics,weight_norm,lr]"), ("fewer", "[loss,task_metrics]")):
        r = launch([*TINY, f"measures={measures}", f"hydra.run.dir={runs / name}"], cwd=tmp_path)
        assert r.returncode == 0, r.stderr[-2000:]
    old = runs / "old"
    shutil.copytree(runs / "fewer", old)
    (old / "metrics.csv").write_text("epoch,train_loss,train_acc,val_loss,val_acc,elapsed\n10,3.1,0.1,3.2,0.05,0.4\n")
    db = tmp_path / "r.db"
    build(runs, db)
    con = sqlite3.connect(db)
    columns = [r[1] for r in con.execute("PRAGMA table_info(metrics)")]
    assert {"train_loss", "val_loss", "train_acc", "val_acc", "weight_norm", "lr"} <= set(columns)
    norms = dict(
        con.execute(
            "SELECT r.run_id, MAX(m.weight_norm) FROM metrics m JOIN runs r USING (run_id) GROUP BY r.run_id"
        ).fetchall()
    )
    assert norms[next(k for k in norms if k.endswith("all"))] > 0
    assert norms[next(k for k in norms if k.endswith("fewer"))] is None
    assert con.execute(
        "SELECT train_acc, val_loss FROM metrics WHERE run_id LIKE '%old' AND epoch = 10"
    ).fetchone() == (0.1, 3.2)


def test_crossings_hold_each_runs_threshold_epochs_and_their_lead_over_the_grok(root, db):
    """The crossings table is summary.json's `crossed` and `hidden_progress`, one row per run and measure column."""
    got = {(r["run_id"], r["measure"]): r for r in dicts(db, "SELECT * FROM crossings")}
    for rid, s in summaries(root).items():
        if s["status"] == "failed":
            assert not any(k[0] == rid for k in got)
            continue
        assert {m for r, m in got if r == rid} == set(s["crossed"])
        for measure, epoch in s["crossed"].items():
            row = got[(rid, measure)]
            assert row["epoch"] == epoch and row["hidden_progress"] == s["hidden_progress"][measure]
            if epoch is not None and s["grok_epoch"] is not None:
                assert row["hidden_progress"] == s["grok_epoch"] - epoch
    # the grokking runs' restricted loss fell below its threshold before they grokked
    leads = dicts(db, "SELECT hidden_progress FROM crossings WHERE measure = 'restricted_loss' AND epoch IS NOT NULL")
    assert len(leads) >= 2 and all(r["hidden_progress"] is None or r["hidden_progress"] > 0 for r in leads)


def test_results_load_into_dataframes_from_a_sweep_a_run_and_a_database(root, db):
    """grokpipe.load: the same runs from a sweep dir and from the database, in the dtypes a notebook expects."""
    import grokpipe

    tiny = root / "multirun" / "tiny"
    sweep = grokpipe.load(tiny)
    assert len(sweep.cells) == 8 and {"model.d_model", "optim.wd", "seed", "grok_epoch", "status"} <= set(sweep.cells)
    assert str(sweep.cells["grok_epoch"].dtype) == "Int64" and str(sweep.cells["grokked"].dtype) == "boolean"
    assert str(sweep.cells["status"].dtype) == "category" and set(sweep.cells["split"]) == {"seed"}
    csv_rows = sum(len(read_metrics_rows(d)) for d in sorted(tiny.iterdir()) if (d / "metrics.csv").is_file())
    assert len(sweep.metrics) == csv_rows and str(sweep.metrics["epoch"].dtype) == "Int64"
    assert sorted(sweep.metrics["run"].unique()) == list(range(8))
    per_cell = sweep.cells.groupby(["model.d_model", "optim.wd"]).size()
    assert list(per_cell) == [2, 2, 2, 2]  # the coordinates group the seeds

    everything = grokpipe.load(db)
    assert len(everything.cells) == 12 and len(everything.metrics) == len(rows(db, "metrics"))
    from_db = everything.cells[everything.cells["experiment"] == "sweep-multirun_tiny"]
    assert sorted(from_db["seed"]) == sorted(sweep.cells["seed"]) and set(from_db["optim.wd"]) == {0.1, 1.0}

    one = grokpipe.load(tiny / "0")
    assert len(one.cells) == 1 and len(one.metrics) == len(read_metrics_rows(tiny / "0"))
    with pytest.raises(ValueError, match="not a run dir"):
        grokpipe.load(root)


def read_metrics_rows(run_dir: Path) -> list[dict]:
    from grokpipe.core.outputs import read_metrics

    return read_metrics(run_dir / "metrics.csv")
