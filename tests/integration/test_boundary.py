"""The boundary sweeper on real runs: it settles a bracket whose cells agree with it, with fewer cells than the
grid, writes its table, figure and database table, and a relaunch of the same command trains nothing again."""

from __future__ import annotations

import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from helpers import GROK, ROOT, TINY, file_hashes, launch

# the searches share one uninterrupted search to compare with: one xdist worker runs the module
pytestmark = pytest.mark.xdist_group("boundary_searches")

# GROK's MLP at p=59: ratio 1 groks by about epoch 600, ratio 1/16 (d_model 4) does not in 800 epochs
SEARCH = [
    *[o for o in GROK if not o.startswith("train.max_epochs=")],
    "train.max_epochs=800",
    "hydra/sweeper=boundary",
    "optim.wd=1",
    "hydra.sweeper.values=[0.0625,0.25,1]",
    "hydra.sweeper.seeds=[0,1]",
]


@pytest.mark.slow
def test_boundary_search_settles_reports_and_resumes(tmp_path):
    sweep = tmp_path / "b"
    first = launch(["-m", *SEARCH, f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    state = json.loads((sweep / "boundary.json").read_text())
    (row,) = state["boundary"]
    ratios = [0.0625, 15 / 59, 1.0]  # the ladder as d_model / p (0.25 * 59 rounds to 15)
    verdict = {}
    for cell in state["cells"]:
        _, index, seed = cell["key"].split("|")
        summary = json.loads((sweep / str(cell["num"]) / "summary.json").read_text())
        assert summary["status"] in ("grokked", "completed")
        verdict.setdefault(int(index), []).append(summary["grokked"])
    # ratio 1 groks and 1/16 does not: the boundary is found between two adjacent points of the ladder, the failing
    # end decided by both its seeds (share 0.5 of 2: one grokking seed makes a point grok), the grokking end by one
    assert row["status"] == "found", row
    lo = ratios.index(pytest.approx(row["bracket_lo"], rel=1e-5))
    hi = ratios.index(pytest.approx(row["bracket_hi"], rel=1e-5))
    assert hi == lo + 1 and row["critical"] == row["bracket_hi"]
    assert verdict[lo] == [False, False] and any(verdict[hi])
    assert any(verdict[2]) and not any(verdict.get(0, [False]))  # ratio 1 groks; 1/16 never does
    assert row["runs"] == len(state["cells"]) < 3 * 2  # fewer cells than the 3-ratio x 2-seed grid
    assert row["run_epochs"] > 0 and row["seeds"] == 2
    assert [c["num"] for c in json.loads((sweep / "cells.json").read_text())] == list(range(row["runs"]))
    with open(sweep / "boundary.csv", newline="") as fh:
        (table,) = list(csv.DictReader(fh))
    assert float(table["axis"]) == 1.0 and int(table["runs"]) == row["runs"]
    assert (sweep / "boundary.png").stat().st_size > 10_000
    with sqlite3.connect(sweep / "experiments.db") as con:
        (db,) = con.execute("SELECT axis, critical, runs, run_epochs FROM boundary").fetchall()
    assert db == (1.0, row["critical"], row["runs"], row["run_epochs"])
    assert f"boundary (ratio) at 1: critical {row['critical']}" in first.stdout

    before = {k: v for k, v in file_hashes(sweep).items() if k.endswith(("summary.json", "metrics.csv"))}
    again = launch(["-m", *SEARCH, f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming the boundary search in {sweep}: {row['runs']} cells known" in again.stderr + again.stdout
    assert "boundary round" not in again.stderr + again.stdout  # nothing left to train
    after = {k: v for k, v in file_hashes(sweep).items() if k.endswith(("summary.json", "metrics.csv"))}
    assert after == before
    assert json.loads((sweep / "boundary.json").read_text())["boundary"] == state["boundary"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["model.d_model=8,16"], "model.d_model is what hydra/sweeper=boundary searches"),
        (["train.batch_size=16,32"], "train.batch_size is swept: with hydra/sweeper=boundary only optim.wd"),
        (["hydra.sweeper.share=0"], "hydra.sweeper.share=0 is not allowed: a share in (0, 1]"),
    ],
)
def test_boundary_bad_input_is_one_line(tmp_path, args, message):
    result = launch(["-m", *SEARCH, *args, f"hydra.sweep.dir={tmp_path / 's'}"], cwd=tmp_path)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert message in line, line
    assert not (tmp_path / "s" / "0").exists()


def test_a_relaunch_with_other_settings_is_refused(tmp_path):
    sweep = tmp_path / "s"
    sweep.mkdir()
    settings = {"mode": "ratio", "fixed": [], "axis": ["1"], "seeds": [0], "ladder": [], "sections": 2, "share": 0.5,
                "screen": True}  # fmt: skip
    (sweep / "boundary.json").write_text(json.dumps({"settings": settings, "cells": [], "rounds": []}))
    result = launch(["-m", *SEARCH, f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert result.returncode == 2
    assert "holds a boundary search with other settings (differs in: fixed, ladder, seeds)" in result.stderr


# a two-point ladder run with every seed at once: round 1 is the top point, seeds 0 and 1 (cells 0 and 1)
SPLIT_SEARCH = [
    *TINY,
    "hydra/sweeper=boundary",
    "optim.wd=1",
    "hydra.sweeper.values=[0.25,1]",
    "hydra.sweeper.screen=false",
    "train.seed=0,1",
    "task.split_seed=${train.seed}",  # an interpolating override, as a grid takes it
]


def test_an_interpolating_override_composes_in_every_cell(tmp_path):
    sweep = tmp_path / "ok"
    result = launch(["-m", *SPLIT_SEARCH, f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    cells = [json.loads(p.read_text()) for p in sorted(sweep.glob("[0-9]*/summary.json"))]
    assert sorted(c["seed"] for c in cells) == [0, 1]
    assert all(c["status"] in ("completed", "grokked") and c["split_seed"] == c["seed"] for c in cells)
    assert all(c["split"] == "seed" for c in cells)
    assert "No artists with labels" not in result.stderr  # the figures of a search where nothing grokked


def test_a_failed_probe_stops_the_search_with_its_error(tmp_path):
    sweep = tmp_path / "bad"
    (sweep / "0" / "metrics.csv").mkdir(parents=True)  # cell 0 fails at run time: its metrics.csv is a directory
    result = launch(["-m", *SPLIT_SEARCH, f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    out = result.stdout + result.stderr
    assert result.returncode == 1, out[-3000:]
    (line,) = [x for x in out.splitlines() if "boundary search stopped" in x]
    assert "stopped in round 1: cell 0 (model.d_model=" in line and "failed:" in line and "metrics.csv" in line
    assert "max_rounds" not in out
    state = json.loads((sweep / "boundary.json").read_text())
    assert [r["round"] for r in state["rounds"]] == [1]
    (row,) = state["boundary"]
    assert row["status"].startswith("stopped: cell 0")
    assert json.loads((sweep / "1" / "summary.json").read_text())["status"] in ("completed", "grokked")  # kept


def _trained(sweep) -> dict:
    """Each finished cell's metrics.csv and summary.json, by hash: what a relaunch must leave as it was."""
    return {k: v for k, v in file_hashes(sweep).items() if k.endswith(("summary.json", "metrics.csv"))}


def _boundary(sweep) -> tuple:
    state = json.loads((sweep / "boundary.json").read_text())
    (row,) = state["boundary"]
    keys = sorted(c["key"] for c in state["cells"])
    return (row["critical"], row["bracket_lo"], row["bracket_hi"], row["status"]), keys


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("whole")
    result = launch(["-m", *SEARCH, f"hydra.sweep.dir={tmp / 'b'}"], cwd=tmp)
    assert result.returncode == 0, result.stderr[-3000:]
    return _boundary(tmp / "b")


@pytest.mark.slow
def test_a_search_stopped_between_rounds_resumes_to_the_same_boundary(tmp_path, uninterrupted):
    sweep = tmp_path / "b"
    first = launch(["-m", *SEARCH, "hydra.sweeper.max_rounds=2", f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert first.returncode == 0 and "stopped after max_rounds=2 rounds, unsettled" in first.stderr + first.stdout
    done = _trained(sweep)
    assert len([k for k in done if k.endswith("summary.json")]) == 2  # rounds 1 and 2, one cell each
    again = launch(["-m", *SEARCH, f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming the boundary search" in again.stderr + again.stdout
    assert {k: v for k, v in _trained(sweep).items() if k in done} == done  # no finished cell trained again
    assert _boundary(sweep) == uninterrupted


@pytest.mark.slow
def test_a_search_killed_mid_round_resumes_to_the_same_boundary(tmp_path, uninterrupted):
    sweep = tmp_path / "b"
    cmd = [sys.executable, str(ROOT / "launch.py"), "-m", *SEARCH, f"hydra.sweep.dir={sweep}"]
    env = {**os.environ, "WANDB_MODE": "offline"}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    deadline = time.time() + 240
    while not (sweep / "1" / "metrics.csv").exists():  # round 2's cell is training: round 1's has finished
        assert proc.poll() is None and time.time() < deadline, "the search ended before its second round"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (sweep / "0" / "summary.json").exists() and not (sweep / "1" / "summary.json").exists()
    done = _trained(sweep)
    again = launch(["-m", *SEARCH, f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming the boundary search" in again.stderr + again.stdout
    kept = {k: v for k, v in done.items() if k.startswith("0/")}
    assert kept and {k: v for k, v in _trained(sweep).items() if k in kept} == kept  # cell 0 not trained again
    assert _boundary(sweep) == uninterrupted
