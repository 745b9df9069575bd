"""The status line of a sweep while a launcher waits on it: cells done (grokked), running, pending, failed, the time
elapsed and an estimate of the time left.

    sweep: 5/8 done (3 grokked), 2 running, 1 pending, 0 failed; 2m10s elapsed, ~1m30s left

On a terminal (stderr) the line is rewritten in place; otherwise (a log, a pipe) it is printed when a count changes
and at least every `every_s` seconds, and once more at the end. The launcher says what its jobs are doing (pending,
running, ended); each cell's summary.json says how an ended one went, and which cells of a running pack have finished.

The estimate: each cell finished in this launch took the time between the polls that first saw it running and
finished; every pending cell is assumed to take their mean, every running one the mean less what it has run, and that
work is spread over the cells running now (or the most seen running at once, when none is). No estimate before the
first cell has finished, nor when the only cells left have run longer than that mean.

A status line never fails a sweep: any exception in it is reported once, as a warning, and the line goes quiet.
Imports nothing heavy: the launchers import this when Hydra discovers them.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TextIO

from grokpipe.core.cells import CELLS, SUCCESS, job_cells
from grokpipe.run.report import format_duration

# what a launcher says of one of its jobs
PENDING, RUNNING, ENDED = "pending", "running", "ended"
GROKKED = "grokked"


def estimate_left(
    durations: Sequence[float], running_ages: Sequence[float], pending: int, parallel: int
) -> float | None:
    """Seconds left: pending cells at the mean finished duration, running ones at the mean less their age, over
    `parallel` cells at a time. None before any cell finished, or when that says nothing (all running cells past the
    mean, none pending)."""
    if not durations:
        return None
    mean = statistics.fmean(durations)
    work = mean * pending + sum(max(0.0, mean - age) for age in running_ages)
    left = work / max(1, parallel)
    return left if left >= 1 else None


def format_line(counts: Mapping[str, int], elapsed: float, left: float | None) -> str:
    """The status line from the counts of cells (total, done, grokked, running, pending, failed)."""
    c = counts
    line = (
        f"sweep: {c['done']}/{c['total']} done ({c['grokked']} grokked), {c['running']} running, "
        f"{c['pending']} pending, {c['failed']} failed; {format_duration(elapsed)} elapsed"
    )
    if left is not None and c["running"] + c["pending"]:
        line += f", ~{format_duration(left)} left"
    return line


class SweepStatus:
    """One status line for the launcher jobs `jobs` of the sweep in `sweep_dir`, counted in cells (a packed sweep's
    job is a pack of cells). Call update() with each job's state as often as the launcher polls; close() at the end."""

    def __init__(
        self,
        sweep_dir: Path,
        jobs: Sequence[int],
        every_s: float = 60.0,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.every_s, self.stream, self.clock = every_s, stream or sys.stderr, clock
        self.off = False
        self.sweep_dir = Path(sweep_dir)
        self.t0 = clock()
        self.last_printed: tuple | None = None
        self.last_text = ""
        self.last_print_t = self.t0
        self.width = 0  # of the line on a terminal, to blank what a shorter line leaves
        try:
            self.tty = self.stream.isatty()
            self.cells = {job: job_cells(sweep_dir, job) for job in jobs}
            self.dirs = _cell_dirs(self.sweep_dir)
            all_cells = [c for cells in self.cells.values() for c in cells]
            # a summary.json already there (an earlier launch's) says nothing of this launch until it changes
            self.at_start = {c: _stamp(self._summary(c)) for c in all_cells}
        except Exception as exc:
            self._warn(exc)
            return
        self.state = dict.fromkeys(all_cells, PENDING)  # pending, running, done, grokked, failed
        self.started: dict[int, float] = {}
        self.durations: list[float] = []
        self.peak_running = 0

    def update(self, jobs: Mapping[int, str]) -> None:
        """`jobs`: launcher job num -> PENDING, RUNNING or ENDED; a job left out keeps its last state."""
        if self.off:
            return
        try:
            self._update(jobs)
            self._show(final=False)
        except Exception as exc:
            self._warn(exc)

    def close(self) -> None:
        """The last line, whatever was printed before it."""
        if self.off:
            return
        try:
            self._show(final=True)
        except Exception as exc:
            self._warn(exc)

    def counts(self) -> dict[str, int]:
        states = list(self.state.values())
        n = {s: states.count(s) for s in (PENDING, RUNNING, GROKKED, "done", "failed")}
        return {
            "total": len(states),
            "done": n["done"] + n[GROKKED],
            "grokked": n[GROKKED],
            "running": n[RUNNING],
            "pending": n[PENDING],
            "failed": n["failed"],
        }

    def line(self) -> str:
        now = self.clock()
        counts = self.counts()
        ages = [now - self.started.get(c, now) for c, s in self.state.items() if s == RUNNING]
        parallel = counts["running"] or self.peak_running
        return format_line(counts, now - self.t0, estimate_left(self.durations, ages, counts["pending"], parallel))

    def _update(self, jobs: Mapping[int, str]) -> None:
        now = self.clock()
        for job, job_state in jobs.items():
            for cell in self.cells.get(job, ()):
                old = self.state[cell]
                if old not in (PENDING, RUNNING):
                    continue  # a cell's outcome is final within a launch
                new = self._cell_state(cell, job_state)
                if new == RUNNING and old != RUNNING:
                    self.started[cell] = now
                if new not in (PENDING, RUNNING) and cell in self.started and new != "failed":
                    self.durations.append(now - self.started[cell])
                self.state[cell] = new
        self.peak_running = max(self.peak_running, self.counts()["running"])

    def _cell_state(self, cell: int, job_state: str) -> str:
        if job_state == PENDING:
            return PENDING
        path = self._summary(cell)
        if job_state == RUNNING:  # a running pack's member that has finished, or a cell whose job is finishing
            if _stamp(path) in (None, self.at_start[cell]):
                return RUNNING
            status = self._status(path)
            return _outcome(status) if status in SUCCESS else RUNNING
        return _outcome(self._status(path))

    def _summary(self, cell: int) -> Path:
        return Path(self.dirs.get(cell) or self.sweep_dir / str(cell)) / "summary.json"

    @staticmethod
    def _status(path: Path) -> str | None:
        try:
            return json.loads(path.read_text()).get("status")
        except (OSError, ValueError):
            return None

    def _show(self, final: bool) -> None:
        text = self.line()
        now = self.clock()
        if self.tty:
            pad = " " * max(0, self.width - len(text))
            self.stream.write(f"\r{text}{pad}" + ("\n" if final else ""))
            self.width = len(text)
        else:
            key = tuple(self.counts().values())
            due = key != self.last_printed or now - self.last_print_t >= self.every_s
            if due or (final and text != self.last_text):
                self.stream.write(text + "\n")
                self.last_printed, self.last_print_t, self.last_text = key, now, text
        self.stream.flush()

    def _warn(self, exc: Exception) -> None:
        self.off = True
        try:
            print(f"warning: sweep status line off ({type(exc).__name__}: {exc})", file=sys.stderr, flush=True)
        except Exception:  # not even stderr: the sweep goes on regardless
            pass


def _outcome(status: str | None) -> str:
    if status == GROKKED:
        return GROKKED
    return "done" if status in SUCCESS else "failed"


def _stamp(path: Path) -> tuple | None:
    """What tells a rewritten summary.json from the one there before (an atomic write replaces the file)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _cell_dirs(sweep_dir: Path) -> dict[int, str]:
    """Cell num -> run dir, from the sweep's manifest; without one, Hydra's default subdir (the job num)."""
    manifest = sweep_dir / CELLS
    if manifest.exists():
        return {e["num"]: e["dir"] for e in json.loads(manifest.read_text())}
    return {}
