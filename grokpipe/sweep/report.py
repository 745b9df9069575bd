"""Any sweep dir, any time, from its files: where it stands (`status`) and its summary rebuilt (`summarize`).

    python -m grokpipe status SWEEP_DIR [--watch [SECONDS]]
    python -m grokpipe summarize SWEEP_DIR

`status` prints the launcher's status line (grokpipe.sweep.status) from what the sweep dir holds, so it works on a
sweep whose launching process is gone and on a finished one: a cell is done (or failed) when its summary.json says
so, running while it has started writing (metrics.csv or its log) and, on SLURM, while `squeue` lists its array task,
pending otherwise. Elapsed runs from the first cell's start to now (to the last summary for a finished sweep); the
time left is the launcher's estimate from the cells finished so far. A boundary search adds its round and its
bracket per searched value (boundary.json). `summarize` writes the sweep summary, database, figures and the
logger's summary exactly as the end of a launch does (grokpipe.sweep.summary), and exits as a launch would.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from grokpipe.core.cells import SUCCESS, read_cells
from grokpipe.sweep.status import GROKKED, PENDING, RUNNING, estimate_left, format_line

RECENT_S = 600  # a cell without a summary counts as running while a file of it changed this recently


def _slurm_states(sweep_dir: Path) -> dict[int, str] | None:
    """Array task index -> its SLURM state for the sweep's submitit jobs that squeue still lists; None off SLURM."""
    folder = sweep_dir / ".submitit"
    if not folder.is_dir():
        return None
    jobs = sorted({p.name.split("_")[0] for p in folder.iterdir() if p.name.split("_")[0].isdigit()})
    if not jobs:
        return None
    try:
        out = subprocess.run(
            ["squeue", "-h", "-r", "-j", ",".join(jobs), "-o", "%i %T"], capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.SubprocessError):
        return None
    states = {}
    for line in out.stdout.splitlines():
        task, state = line.split()
        if "_" in task:
            states[int(task.rsplit("_", 1)[1])] = state
    return states


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def cell_states(sweep_dir: Path, now: float | None = None) -> list[dict]:
    """Each cell of the sweep with `state` (grokked, done, failed, running, pending), `started` and `ended`."""
    now = time.time() if now is None else now
    slurm = _slurm_states(sweep_dir)
    out = []
    for cell in read_cells(sweep_dir):
        run_dir = Path(cell["dir"])
        touched = [t for t in (_mtime(run_dir / n) for n in ("metrics.csv", "launch.log", ".hydra")) if t is not None]
        started = min(touched) if touched else None
        if cell["status"] in SUCCESS:
            state = GROKKED if cell["status"] == GROKKED else "done"
        elif cell["status"] != "missing":
            state = "failed"
        elif slurm is not None and slurm.get(cell["num"]) in ("RUNNING", "COMPLETING"):
            state = RUNNING
        elif slurm is not None and cell["num"] in slurm:
            state = PENDING
        elif touched and now - max(touched) < RECENT_S:
            state = RUNNING
        else:
            state = PENDING
        ended = _mtime(run_dir / "summary.json") if state not in (PENDING, RUNNING) else None
        out.append({**cell, "state": state, "started": started, "ended": ended})
    return out


def status_line(sweep_dir: Path, now: float | None = None) -> str:
    """The launcher's status line for the sweep as its files stand."""
    now = time.time() if now is None else now
    cells = cell_states(sweep_dir, now)
    states = [c["state"] for c in cells]
    counts = {
        "total": len(cells),
        "done": states.count("done") + states.count(GROKKED),
        "grokked": states.count(GROKKED),
        "running": states.count(RUNNING),
        "pending": states.count(PENDING),
        "failed": states.count("failed"),
    }
    starts = [c["started"] for c in cells if c["started"] is not None]
    ends = [c["ended"] for c in cells if c["ended"] is not None]
    finished = not counts["running"] and not counts["pending"]
    elapsed = ((max(ends) if finished and ends else now) - min(starts)) if starts else 0.0
    durations = [c["wall_seconds"] for c in cells if c["state"] in ("done", GROKKED) and c.get("wall_seconds")]
    ages = [now - c["started"] for c in cells if c["state"] == RUNNING and c["started"] is not None]
    left = estimate_left(durations, ages, counts["pending"], counts["running"])
    return format_line(counts, elapsed, left)


def boundary_lines(sweep_dir: Path) -> list[str]:
    """A boundary search's round and, per searched value, its bracket and status so far (boundary.json)."""
    path = sweep_dir / "boundary.json"
    if not path.is_file():
        return []
    state = json.loads(path.read_text())
    rounds = state.get("rounds") or []
    lines = [f"boundary search ({state['settings']['mode']}): round {rounds[-1]['round'] if rounds else 0}, "
             f"{len(state.get('cells', []))} cells"]  # fmt: skip
    for row in state.get("boundary") or []:
        lines.append(
            f"  at {row['axis']:g}: critical {row['critical']} [{row['bracket_lo']}, {row['bracket_hi']}] "
            f"{row['status']}"
        )
    if not state.get("boundary"):
        lines.append("  brackets: written when the search ends or stops (boundary.csv)")
    return lines


def status(sweep_dir: Path, watch: float | None = None) -> int:
    """Print the status (and a boundary search's state); with `watch`, redraw every `watch` seconds until the
    sweep has no running or pending cell."""
    import sys

    if not (sweep_dir / "cells.json").is_file() and not (sweep_dir / "multirun.yaml").is_file():
        print(f"error: {sweep_dir}: not a sweep dir (no cells.json or multirun.yaml)", file=sys.stderr)
        return 2
    while True:
        text = "\n".join([status_line(sweep_dir), *boundary_lines(sweep_dir)])
        if watch is None:
            print(text, flush=True)
            return 0
        print(("\033[H\033[J" if sys.stdout.isatty() else "") + text, flush=True)
        if " 0 running, 0 pending" in text:
            return 0
        time.sleep(watch)


def summarize(sweep_dir: Path) -> int:
    """The sweep summary, database, figures and the logger's summary, as at the end of a launch; the exit status a
    launch would have (1 when any cell failed)."""
    import sys

    from omegaconf import OmegaConf

    from grokpipe.sweep.summary import SweepSummary

    master = sweep_dir / "multirun.yaml"
    if not master.is_file():
        print(f"error: {sweep_dir}: not a sweep dir (no multirun.yaml)", file=sys.stderr)
        return 2
    config = OmegaConf.load(master)
    config.hydra.sweep.dir = str(sweep_dir)  # the dir it is now, wherever it was launched
    try:
        SweepSummary().on_multirun_end(config)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0
