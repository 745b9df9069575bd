"""Sweeps on a real SLURM cluster (scripts/slurm_up.sh): one job array, and a requeue that resumes exactly.

Skipped when no cluster answers, unless CI is set: then a missing cluster is a failure (tests/cluster/conftest.py).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time

import pytest
from helpers import ROOT, launch, offline_runs, summary, wait_rows, without_elapsed

from grokpipe.outputs import read_metrics

pytestmark = pytest.mark.slurm
TINY = ["model=mlp", "task.p=23", "train.max_epochs=60", "logger=none", "train.print_every=0", "train.plot=false"]


def test_grid_goes_to_slurm_as_one_array_job(tmp_path):
    sweep = tmp_path / "sw"
    r = launch(
        ["-m", "hydra/launcher=slurm", *TINY, "model.d_model=8,16", "optim.wd=0.1,1", f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    (script,) = (sweep / ".submitit").glob("*/*_submission.sh")
    assert "#SBATCH --array=0-3%4" in script.read_text()
    job_id = script.parent.name
    tasks = sorted(p.name for p in (sweep / ".submitit").iterdir() if p.name.startswith(f"{job_id}_"))
    assert tasks == [f"{job_id}_{i}" for i in range(4)]
    summaries = [json.loads((sweep / str(i) / "summary.json").read_text()) for i in range(4)]
    assert sorted((s["d_model"], s["wd"]) for s in summaries) == [(8, 0.1), (8, 1.0), (16, 0.1), (16, 1.0)]
    assert all(s["status"] == "completed" for s in summaries)
    assert len(list(csv.DictReader(open(sweep / "sweep_summary.csv")))) == 4
    assert (sweep / "phase_diagram.png").exists()


RUN = [
    "model=mlp",
    "task.p=97",
    "optim.lr=3e-3",
    "train.max_epochs=1500",
    "train.latest_every=100",
    "train.checkpoint_every=0",
    "train.patience=null",
    "train.plot=false",
    "train.print_every=100",
]


# scontrol requeue: SLURM's SIGTERM, as on preemption; USR2: submitit's time-limit signal, after which
# submitit requeues the job itself
@pytest.mark.parametrize("interrupt", [["scontrol", "requeue"], ["scancel", "--signal=USR2"]], ids=["requeue", "usr2"])
def test_interrupted_cell_resumes_with_identical_metrics(tmp_path, interrupt):
    sweep, ref = tmp_path / "sw", tmp_path / "ref"
    env = {**os.environ, "WANDB_MODE": "offline", "HOME": str(tmp_path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "launch.py"),
            "-m",
            "hydra/launcher=slurm",
            *RUN,
            "logger=wandb",
            "train.seed=7",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    # the uninterrupted reference, same seed and thread count, while the cluster runs the cell
    reference = subprocess.Popen(
        [sys.executable, str(ROOT / "launch.py"), *RUN, "logger=none", "train.seed=7", f"hydra.run.dir={ref}"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    metrics = sweep / "0" / "metrics.csv"
    wait_rows(metrics, 300, proc, timeout=300)
    # the signal also kills W&B's helper: what the attempt had flushed (every 2 s) is what W&B keeps of it
    deadline = time.time() + 60
    while not (offline_runs(sweep / "0") and summary(offline_runs(sweep / "0")[0])["run_id"]):
        assert time.time() < deadline, "the first attempt's W&B run was never flushed"
        time.sleep(0.5)
    # this sweep's job, by its submitit folder: the other tests' jobs may be in the queue too
    (script,) = (sweep / ".submitit").glob("*/*_submission.sh")
    subprocess.run([*interrupt, script.parent.name], check=True)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    ref_out, _ = reference.communicate(timeout=600)
    assert reference.returncode == 0, ref_out[-2000:]

    cell = sweep / "0"
    assert without_elapsed(read_metrics(cell / "metrics.csv")) == without_elapsed(read_metrics(ref / "metrics.csv"))
    log = "".join(p.read_text() for p in (sweep / ".submitit").glob("*/*_log.out"))
    assert "resuming" in log, "the cell was not interrupted and resumed"
    runs = offline_runs(cell)
    assert len(runs) == 2  # W&B offline writes one dir per attempt, under the same run id
    ids = {summary(r)["run_id"] for r in runs}
    assert ids == {(cell / "wandb_id.txt").read_text().strip()}
    resumed, straight = (json.loads((d / "summary.json").read_text()) for d in (cell, ref))
    assert resumed["status"] == straight["status"] and resumed["grok_epoch"] == straight["grok_epoch"]


def test_a_cancelled_array_task_is_reported_and_a_rerun_finishes_it(tmp_path):
    sweep = tmp_path / "sw"
    args = [
        sys.executable,
        str(ROOT / "launch.py"),
        "-m",
        "hydra/launcher=slurm",
        *RUN,
        "train.max_epochs=600",
        "logger=none",
        "train.seed=0,1",
        f"hydra.sweep.dir={sweep}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_rows(sweep / "1" / "metrics.csv", 100, proc, timeout=300)
    (script,) = (sweep / ".submitit").glob("*/*_submission.sh")
    subprocess.run(["scancel", f"{script.parent.name}_1"], check=True)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 1, out[-3000:]
    cell = json.loads((sweep / "1" / "summary.json").read_text())
    assert cell["status"] == "failed" and f"SLURM job {script.parent.name}_1 ended without a result" in cell["error"]
    assert json.loads((sweep / "0" / "summary.json").read_text())["status"] in ("completed", "grokked")
    assert "cell 1 failed" in out
    before = (sweep / "0" / "metrics.csv").stat().st_mtime_ns
    again = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert (sweep / "0" / "metrics.csv").stat().st_mtime_ns == before
    rows = read_metrics(sweep / "1" / "metrics.csv")
    assert [r["epoch"] for r in rows] == list(range(10, rows[-1]["epoch"] + 1, 10))
    assert json.loads((sweep / "1" / "summary.json").read_text())["status"] in ("completed", "grokked")


def test_packed_grid_is_one_array_task_per_shape_and_a_signalled_pack_resumes(tmp_path):
    """hydra.sweeper.pack=true: 4 cells of 2 shapes -> a 2-task array; submitit's time-limit signal (USR2) to
    one pack checkpoints every member, submitit requeues it, and each member's metrics equal an uninterrupted pack's."""
    sweep, ref = tmp_path / "sw", tmp_path / "ref"
    grid = [
        *RUN,
        "train.max_epochs=900",
        "logger=none",
        "model.d_model=32,64",
        "train.seed=3,4",
        "hydra.sweeper.pack=true",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(ROOT / "launch.py"), "-m", *grid]
    proc = subprocess.Popen(
        [*cmd, "hydra/launcher=slurm", f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    # the uninterrupted reference: the same packs, one after another in a plain process
    reference = subprocess.Popen(
        [*cmd, f"hydra.sweep.dir={ref}"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    wait_rows(sweep / "2" / "metrics.csv", 300, proc, timeout=300)  # cell 2 is in pack 1 (d_model 64)
    plan = json.loads((sweep / "packs.json").read_text())
    assert [p["cells"] for p in plan] == [[0, 1], [2, 3]]
    (script,) = (sweep / ".submitit").glob("*/*_submission.sh")
    assert "#SBATCH --array=0-1%2" in script.read_text()
    subprocess.run(["scancel", "--signal=USR2", f"{script.parent.name}_1"], check=True)
    out, _ = proc.communicate(timeout=600)
    ref_out, _ = reference.communicate(timeout=600)
    assert reference.returncode == 0, ref_out[-2000:]
    assert proc.returncode == 0, out[-3000:]

    log = "".join(p.read_text() for p in (sweep / ".submitit").glob("*_1/*_log.out"))
    assert "checkpoints saved" in log and "resuming a pack of 2" in log, "the pack was not interrupted and resumed"
    for num in range(4):
        got, want = (read_metrics(d / str(num) / "metrics.csv") for d in (sweep, ref))
        assert without_elapsed(got) == without_elapsed(want), f"cell {num}"
        a, b = (json.loads((d / str(num) / "summary.json").read_text()) for d in (sweep, ref))
        assert (a["status"], a["grok_epoch"], a["epochs_run"]) == (b["status"], b["grok_epoch"], b["epochs_run"])
    assert len(list(csv.DictReader(open(sweep / "cells.csv")))) == 4
