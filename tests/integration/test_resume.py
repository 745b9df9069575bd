"""A run killed hard, or stopped by SIGTERM, resumes on its run dir with no lost or repeated evaluation."""

from __future__ import annotations

import json
import signal

import pytest
from helpers import start_run, wait_rows, without_elapsed

from grokpipe.outputs import load_checkpoint, read_metrics

# one xdist worker runs the module (pytest -n, --dist loadgroup): its tests share one reference run
pytestmark = pytest.mark.xdist_group("resume_reference")

RUN = [
    "model=mlp",
    "task.p=97",
    "optim.lr=3e-3",
    "train.max_epochs=700",
    "train.latest_every=50",
    "train.checkpoint_every=0",
    "train.patience=null",
    "logger=none",
    "train.plot=false",
    "train.print_every=0",
]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> list[dict]:
    run_dir = tmp_path_factory.mktemp("ref") / "run"
    proc = start_run(RUN, run_dir)
    assert proc.wait(timeout=300) == 0, proc.communicate()
    return without_elapsed(read_metrics(run_dir / "metrics.csv"))


@pytest.mark.slow
def test_kill_9_then_relaunch_matches_an_uninterrupted_run(tmp_path, reference):
    run_dir = tmp_path / "run"
    proc = start_run(RUN, run_dir)
    wait_rows(run_dir / "metrics.csv", 230, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = read_metrics(run_dir / "metrics.csv")[-1]["epoch"]
    assert killed_at < 700
    again = start_run(RUN, run_dir)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert "resuming" in out and "from epoch" in out
    rows = read_metrics(run_dir / "metrics.csv")
    assert without_elapsed(rows) == reference
    assert len({r["epoch"] for r in rows}) == len(rows) == 70


@pytest.mark.slow
def test_sigterm_checkpoints_at_once_and_resumes(tmp_path, reference):
    run_dir = tmp_path / "run"
    proc = start_run(RUN, run_dir)
    wait_rows(run_dir / "metrics.csv", 120, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    summary = json.loads((run_dir / "summary.json").read_text())
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert summary["status"] == "interrupted" and state["status"] == "interrupted"
    assert state["epoch"] == summary["epochs_run"] >= 120  # saved where it stopped, not at the last multiple of 50
    again = start_run(RUN, run_dir)
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert without_elapsed(read_metrics(run_dir / "metrics.csv")) == reference
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
