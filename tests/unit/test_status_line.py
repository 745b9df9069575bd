"""The sweep status line: its format, its estimate of the time left, when it prints, and that it never fails a
sweep. A fake clock and real summary.json files in a real sweep dir; the launchers' own use is in
tests/integration/test_sweep_status.py and tests/cluster/test_slurm.py."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from grokpipe.core.cells import write_cells, write_packs
from grokpipe.run.report import format_duration
from grokpipe.sweep.status import ENDED, PENDING, RUNNING, SweepStatus, estimate_left, format_line


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def sweep_dir(tmp_path: Path, n: int) -> Path:
    sweep = tmp_path / "sw"
    write_cells(sweep, [{"num": i, "overrides": [], "dir": str(sweep / str(i))} for i in range(n)])
    return sweep


def finish(sweep: Path, num: int, status: str) -> None:
    (sweep / str(num)).mkdir(parents=True, exist_ok=True)
    (sweep / str(num) / "summary.json").write_text(json.dumps({"status": status}))


@pytest.mark.parametrize("seconds,text", [(0, "0s"), (45.4, "45s"), (130, "2m10s"), (3599.6, "1h00m"), (3900, "1h05m")])
def test_durations_read_in_two_units_at_most(seconds, text):
    assert format_duration(seconds) == text


def test_the_line_reads_as_documented():
    counts = {"total": 8, "done": 5, "grokked": 3, "running": 2, "pending": 1, "failed": 0}
    assert format_line(counts, 130, 90) == (
        "sweep: 5/8 done (3 grokked), 2 running, 1 pending, 0 failed; 2m10s elapsed, ~1m30s left"
    )
    assert format_line(counts, 130, None).endswith("; 2m10s elapsed")
    done = {**counts, "done": 8, "running": 0, "pending": 0}
    assert format_line(done, 130, 90).endswith("; 2m10s elapsed")  # nothing left: no estimate


def test_the_estimate_spreads_the_mean_over_the_cells_running():
    assert estimate_left([], [10], pending=3, parallel=2) is None  # nothing finished yet
    # mean 90 s: 2 pending at 90, running ones at 90-30 and 90-100 (past the mean: 0), over 2 at a time
    assert estimate_left([60, 120], [30, 100], pending=2, parallel=2) == pytest.approx((180 + 60) / 2)
    assert estimate_left([60], [], pending=4, parallel=0) == 240  # none running: one at a time at least
    assert estimate_left([60], [70], pending=0, parallel=1) is None  # only cells past the mean left


def test_a_log_gets_a_line_on_change_and_every_period_and_the_counts_follow_the_cells(tmp_path):
    sweep, clock, out = sweep_dir(tmp_path, 4), Clock(), io.StringIO()
    status = SweepStatus(sweep, range(4), every_s=60, stream=out, clock=clock)
    status.update({0: RUNNING, 1: RUNNING, 2: PENDING, 3: PENDING})
    clock.t += 5
    status.update({0: RUNNING, 1: RUNNING, 2: PENDING, 3: PENDING})  # no change, within the period: no line
    clock.t += 55
    status.update({0: RUNNING, 1: RUNNING, 2: PENDING, 3: PENDING})  # the period: a line
    finish(sweep, 0, "grokked")
    clock.t += 40
    status.update({0: ENDED, 1: RUNNING, 2: RUNNING, 3: PENDING})
    finish(sweep, 1, "failed")
    clock.t += 20
    status.update({1: ENDED})  # a job left out keeps its state
    finish(sweep, 2, "completed")
    clock.t += 50
    status.update({2: ENDED, 3: RUNNING})
    clock.t += 10
    # cell 3 never wrote a summary: missing, a failure
    status.update({3: ENDED})
    status.close()
    assert out.getvalue().splitlines() == [
        "sweep: 0/4 done (0 grokked), 2 running, 2 pending, 0 failed; 0s elapsed",
        "sweep: 0/4 done (0 grokked), 2 running, 2 pending, 0 failed; 1m00s elapsed",
        # cell 0 took 100 s: cell 3 pending at 100, cell 1 has run 100 (0 left), cell 2 none (100): 200 / 2 running
        "sweep: 1/4 done (1 grokked), 2 running, 1 pending, 0 failed; 1m40s elapsed, ~1m40s left",
        # mean 100 s: cell 2 has run 20, cell 3 pending: (80 + 100) / 1 running
        "sweep: 1/4 done (1 grokked), 1 running, 1 pending, 1 failed; 2m00s elapsed, ~3m00s left",
        # cells 0 and 2 took 100 and 70 s: cell 3 at 85, just started
        "sweep: 2/4 done (1 grokked), 1 running, 0 pending, 1 failed; 2m50s elapsed, ~1m25s left",
        "sweep: 2/4 done (1 grokked), 0 running, 0 pending, 2 failed; 3m00s elapsed",
    ]


def test_a_terminal_line_is_rewritten_in_place(tmp_path):
    sweep, clock, out = sweep_dir(tmp_path, 2), Clock(), Terminal()
    status = SweepStatus(sweep, range(2), stream=out, clock=clock)
    status.update({0: PENDING, 1: PENDING})
    status.update({0: PENDING, 1: PENDING})  # unchanged, still shown: the elapsed time moves
    finish(sweep, 0, "completed")
    finish(sweep, 1, "grokked")
    clock.t += 12
    status.update({0: ENDED, 1: ENDED})
    status.close()
    first = "sweep: 0/2 done (0 grokked), 0 running, 2 pending, 0 failed; 0s elapsed"
    last = "sweep: 2/2 done (1 grokked), 0 running, 0 pending, 0 failed; 12s elapsed"
    assert out.getvalue() == f"\r{first}\r{first}\r{last}\r{last}\n"


def test_a_running_pack_counts_each_member_that_has_finished_in_this_launch(tmp_path):
    sweep = sweep_dir(tmp_path, 4)
    write_packs(sweep, [{"pack": 0, "cells": [0, 1], "dirs": []}, {"pack": 1, "cells": [2, 3], "dirs": []}])
    finish(sweep, 3, "completed")  # an earlier launch's: says nothing of this one until it is rewritten
    clock, out = Clock(), io.StringIO()
    status = SweepStatus(sweep, [0, 1], stream=out, clock=clock)
    status.update({0: RUNNING, 1: RUNNING})
    finish(sweep, 1, "grokked")
    finish(sweep, 2, "failed")  # a running job's failed member is not final: the job may resume it
    status.update({0: RUNNING, 1: RUNNING})
    assert status.counts() == {"total": 4, "done": 1, "grokked": 1, "running": 3, "pending": 0, "failed": 0}
    finish(sweep, 0, "completed")
    status.update({0: ENDED, 1: ENDED})
    assert status.counts() == {"total": 4, "done": 3, "grokked": 1, "running": 0, "pending": 0, "failed": 1}


class Broken(io.StringIO):
    def write(self, text: str) -> int:
        raise OSError(5, "Input/output error")


def test_a_failing_status_line_warns_once_and_goes_quiet(tmp_path, capsys):
    sweep = sweep_dir(tmp_path, 2)
    status = SweepStatus(sweep, range(2), stream=Broken(), clock=Clock())
    for _ in range(3):
        status.update({0: RUNNING, 1: PENDING})
    status.close()
    assert capsys.readouterr().err == "warning: sweep status line off (OSError: [Errno 5] Input/output error)\n"
    # a manifest it cannot read: the same, from the start
    (sweep / "cells.json").write_text("{not json")
    status = SweepStatus(sweep, range(2), stream=io.StringIO(), clock=Clock())
    status.update({0: RUNNING})
    status.close()
    assert capsys.readouterr().err.startswith("warning: sweep status line off (JSONDecodeError: ")
