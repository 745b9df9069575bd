"""The status line of a real local sweep: printed to stderr while the launcher waits, one line per change when stderr
is not a terminal, and a last line whose counts are the sweep summary's."""

from __future__ import annotations

import csv

from helpers import launch

from grokpipe.core.cells import SUCCESS

TINY = ["model=mlp", "task.p=23", "train.max_epochs=30", "logger=none", "train.print_every=0", "train.plot=false"]


def test_a_local_sweep_shows_its_progress_and_ends_on_the_summary_counts(tmp_path):
    sweep = tmp_path / "sw"
    (sweep / "1" / "metrics.csv").mkdir(parents=True)  # cell 1 fails at run time, on any machine
    # one job per cell (not packed): the line counts jobs starting and ending
    args = [
        "-m",
        *TINY,
        "train.seed=0,1,2,3",
        "hydra/launcher=local",
        "hydra.launcher.n_jobs=2",
        "hydra.sweeper.pack=false",
    ]
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


def test_status_and_summarize_read_any_sweep_dir_from_its_files(tmp_path):
    """`python -m grokpipe status|summarize SWEEP_DIR` after the launching process is gone: the launcher's status
    line from the files (a cell without a summary is pending once nothing of it moves), and the summary rebuilt."""
    import os
    import subprocess
    import sys

    from helpers import TINY, launch

    sweep = tmp_path / "sw"
    r = launch(["-m", "model.d_model=8,16", *TINY, f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]

    def grokpipe_cmd(*args):
        return subprocess.run([sys.executable, "-m", "grokpipe", *args], capture_output=True, text=True, timeout=300)

    done = grokpipe_cmd("status", str(sweep))
    assert done.returncode == 0
    assert done.stdout.startswith("sweep: 2/2 done (0 grokked), 0 running, 0 pending, 0 failed")
    (sweep / "1" / "summary.json").unlink()  # a cell whose process was killed before it finished
    for f in (sweep / "1").rglob("*"):
        os.utime(f, (0, 0))  # nothing of it moved for long: not running
    os.utime(sweep / "1" / ".hydra", (0, 0))
    left = grokpipe_cmd("status", str(sweep))
    assert "1/2 done (0 grokked), 0 running, 1 pending, 0 failed" in left.stdout, left.stdout + left.stderr
    (sweep / "sweep_summary.csv").unlink()
    rebuilt = grokpipe_cmd("summarize", str(sweep))
    assert rebuilt.returncode == 1, rebuilt.stderr[-2000:]  # as a launch with a missing cell would end
    assert (sweep / "sweep_summary.csv").is_file() and "cell 1 missing" in rebuilt.stdout
    bad = grokpipe_cmd("status", str(tmp_path))
    assert bad.returncode == 2
    assert bad.stderr.strip() == f"error: {tmp_path}: not a sweep dir (no cells.json or multirun.yaml)"
