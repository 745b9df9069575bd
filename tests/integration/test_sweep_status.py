"""The status line of a real local sweep: printed to stderr while the launcher waits, one line per change when stderr
is not a terminal, and a last line whose counts are the sweep summary's."""

from __future__ import annotations

import csv

from helpers import launch

from grokpipe.sweep import SUCCESS

TINY = ["model=mlp", "task.p=23", "train.max_epochs=30", "logger=none", "train.print_every=0", "train.plot=false"]


def test_a_local_sweep_shows_its_progress_and_ends_on_the_summary_counts(tmp_path):
    sweep = tmp_path / "sw"
    (sweep / "1" / "metrics.csv").mkdir(parents=True)  # cell 1 fails at run time, on any machine
    args = ["-m", *TINY, "train.seed=0,1,2,3", "hydra/launcher=local", "hydra.launcher.n_jobs=2"]
    r = launch([*args, f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert r.returncode == 1, r.stderr[-3000:]
    lines = [line for line in r.stderr.splitlines() if line.startswith("sweep: ")]
    assert "\r" not in r.stderr  # not a terminal: whole lines
    assert lines[0].startswith("sweep: 0/4 done (0 grokked), 2 running, 2 pending, 0 failed; ")
    assert len(lines) == len(set(lines)) >= 3  # a line on each change, none repeated

    cells = list(csv.DictReader(open(sweep / "cells.csv")))
    done = sum(c["status"] in SUCCESS for c in cells)
    grokked = sum(c["status"] == "grokked" for c in cells)
    assert (len(cells), done) == (4, 3)
    expected = f"sweep: {done}/4 done ({grokked} grokked), 0 running, 0 pending, {4 - done} failed; "
    assert lines[-1].startswith(expected) and lines[-1].endswith(" elapsed"), lines
