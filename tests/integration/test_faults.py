"""Fault injection: real processes, signals, damaged files, full and read-only disks, W&B failures and
dying workers. Every fault ends with zero lost or repeated metrics rows and a clear message."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT, compose_cfg, launch, offline_runs, start_run, summary, wait_rows, without_elapsed

from grokpipe.errors import ConfigError
from grokpipe.outputs import load_checkpoint, read_metrics
from grokpipe.train import run

SHORT = [
    "task.p=23",
    "train.eval_every=10",
    "logger=none",
    "train.plot=false",
    "train.print_every=0",
    "train.checkpoint_every=0",
    "train.patience=null",
]
LONG = [
    "model=mlp",
    "task.p=97",
    "optim.lr=3e-3",
    "train.max_epochs=600",
    "train.latest_every=50",
    "train.checkpoint_every=0",
    "train.patience=null",
    "logger=none",
    "train.plot=false",
    "train.print_every=0",
]
ENV = {**os.environ, "WANDB_MODE": "offline"}


@pytest.fixture(scope="module")
def long_reference(tmp_path_factory) -> list[dict]:
    run_dir = tmp_path_factory.mktemp("ref") / "run"
    proc = start_run(LONG, run_dir)
    assert proc.wait(timeout=300) == 0
    return without_elapsed(read_metrics(run_dir / "metrics.csv"))


# the tests against long_reference run on one xdist worker (pytest -n, --dist loadgroup), which makes it once
shares_long_reference = pytest.mark.xdist_group("faults_long_reference")


# --- crash-safe state -------------------------------------------------------------------------------------------


@pytest.mark.slow
@shares_long_reference
def test_repeated_hard_kills_lose_and_repeat_nothing(tmp_path, long_reference):
    run_dir = tmp_path / "run"
    for stop_at in (90, 230, 260, 480):  # 260: killed again before the next checkpoint
        proc = start_run(LONG, run_dir)
        wait_rows(run_dir / "metrics.csv", stop_at, proc)
        proc.kill()
        proc.wait()
        assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["epoch"] % 50 == 0
    proc = start_run(LONG, run_dir)
    assert proc.wait(timeout=300) == 0
    rows = read_metrics(run_dir / "metrics.csv")
    assert without_elapsed(rows) == long_reference and len({r["epoch"] for r in rows}) == len(rows) == 60


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_damaged_latest_checkpoint_resumes_from_the_one_before(tmp_path, damage, capsys):
    straight = run(compose_cfg([*SHORT, "train.max_epochs=60", "train.latest_every=20"]), tmp_path / "straight")
    run(compose_cfg([*SHORT, "train.max_epochs=45", "train.latest_every=20"]), tmp_path / "hurt")
    last = tmp_path / "hurt" / "checkpoints" / "last.pt"
    data = last.read_bytes()
    last.write_bytes({"truncate": data[: len(data) // 2], "garbage": os.urandom(len(data)), "empty": b""}[damage])
    resumed = run(compose_cfg([*SHORT, "train.max_epochs=60", "train.latest_every=20"]), tmp_path / "hurt")
    err = capsys.readouterr().err
    assert "unreadable checkpoint last.pt" in err and "resuming from last.prev.pt (epoch 40)" in err
    assert without_elapsed(read_metrics(tmp_path / "hurt" / "metrics.csv")) == without_elapsed(
        read_metrics(tmp_path / "straight" / "metrics.csv")
    )
    assert resumed["final_val_acc"] == straight["final_val_acc"]


def test_a_checkpoint_of_another_config_is_never_resumed(tmp_path):
    run(compose_cfg([*SHORT, "train.max_epochs=20"]), tmp_path)
    with pytest.raises(ConfigError, match=r"holds a run of another config \(differs in: optim\)"):
        run(compose_cfg([*SHORT, "train.max_epochs=40", "optim.wd=0.5"]), tmp_path)
    r = launch([*SHORT, "train.max_epochs=40", "optim.wd=0.5", f"hydra.run.dir={tmp_path}"], cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "another config" in r.stderr


# --- divergence -------------------------------------------------------------------------------------------------


def test_divergence_ends_the_run_as_diverged_and_the_sweep_goes_on(tmp_path):
    sweep = tmp_path / "sw"
    r = launch(
        [
            "-m",
            *SHORT[:-2],
            "model=mlp",
            "optim=sgd",
            "optim.lr=1e-2,1e12",
            "train.max_epochs=200",
            "logger=wandb",
            "hydra/launcher=local",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=tmp_path,
        env={"HOME": str(tmp_path)},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    fine, blown = (json.loads((sweep / str(i) / "summary.json").read_text()) for i in (0, 1))
    assert fine["status"] == "completed" and fine["epochs_run"] == 200
    assert blown["status"] == "diverged" and blown["epochs_run"] < 200 and not blown["grokked"]
    assert summary(offline_runs(sweep / "1")[0])["summary"]["status"] == "diverged"
    rows = read_metrics(sweep / "1" / "metrics.csv")
    assert rows[-1]["epoch"] == blown["epochs_run"] and len(rows) == blown["epochs_run"] // 10


def test_a_diverging_run_alone_ends_diverged_with_its_finite_curves_and_no_traceback(tmp_path):
    run_dir = tmp_path / "run"
    r = launch(
        [
            "task.p=23",
            "model.d_model=32",
            "optim.lr=1e9",
            "train.max_epochs=100",
            "train.plot=true",
            "logger=none",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=tmp_path,
    )
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    done = json.loads((run_dir / "summary.json").read_text())
    assert done["status"] == "diverged" and done["epochs_run"] < 100 and not done["grokked"]
    assert (run_dir / "curves.png").stat().st_size > 5_000
    assert read_metrics(run_dir / "metrics.csv")[-1]["epoch"] == done["epochs_run"]


# --- logging faults ---------------------------------------------------------------------------------------------


def _assert_ran_without_wandb(r, run_dir: Path, epochs: int) -> None:
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stderr.count("warning: W&B") == 1, r.stderr
    rows = read_metrics(run_dir / "metrics.csv")
    assert [x["epoch"] for x in rows] == list(range(10, epochs + 1, 10))
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"


@pytest.mark.slow
def test_invalid_key_and_unreachable_host_degrade_once(tmp_path):
    run_dir = tmp_path / "run"
    env = {
        "WANDB_MODE": "online",
        "WANDB_API_KEY": "0" * 40,
        "WANDB_BASE_URL": "http://127.0.0.1:9",
        "HOME": str(tmp_path),
    }
    r = launch(
        [*SHORT, "train.max_epochs=50", "logger=wandb", "logger.init_timeout=5", f"hydra.run.dir={run_dir}"],
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    _assert_ran_without_wandb(r, run_dir, 50)
    assert "0" * 40 not in r.stdout + r.stderr


def test_unwritable_wandb_dir_degrades_once(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "wandb").write_text("a file where W&B wants its dir")
    r = launch(
        [*SHORT, "train.max_epochs=50", "logger=wandb", f"hydra.run.dir={run_dir}"],
        cwd=tmp_path,
        env={"HOME": str(tmp_path)},
    )
    _assert_ran_without_wandb(r, run_dir, 50)


@pytest.mark.slow
@shares_long_reference
def test_killed_wandb_helper_never_stops_training(tmp_path, long_reference):
    run_dir = tmp_path / "run"
    proc = start_run(
        [*LONG[:-3], "logger=wandb", "train.plot=false", "train.print_every=0"], run_dir, env={"HOME": str(tmp_path)}
    )
    wait_rows(run_dir / "metrics.csv", 100, proc)
    helpers = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert helpers, "no W&B helper process found"
    for pid in helpers:
        os.kill(int(pid), signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    assert err.count("warning: W&B") <= 1
    assert without_elapsed(read_metrics(run_dir / "metrics.csv")) == long_reference


# --- storage faults ---------------------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs: a disk that really fills up."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)])


def test_full_disk_is_refused_before_training(small_disk):
    run_dir = small_disk / "run"
    r = launch(
        [*SHORT, "train.max_epochs=20000", "train.checkpoint_every=100", f"hydra.run.dir={run_dir}"],
        cwd=small_disk.parent,
    )
    assert r.returncode == 3
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: output dir {run_dir} has") and "MiB free; this run needs about" in line
    assert not (run_dir / "metrics.csv").exists()


def test_read_only_output_dir_is_refused_before_training(small_disk):
    run_dir = small_disk / "run"
    run_dir.mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    r = launch(
        [
            *SHORT,
            "train.max_epochs=20",
            f"hydra.run.dir={run_dir}",
            "hydra.output_subdir=null",
            "hydra/job_logging=stdout",
        ],
        cwd=small_disk.parent,
    )
    assert r.returncode == 3, r.stderr
    assert r.stderr.strip().splitlines()[-1] == f"error: output dir {run_dir} is not writable: Read-only file system"


@pytest.mark.slow
@shares_long_reference
def test_disk_filling_mid_run_stops_cleanly_and_resumes(small_disk, long_reference):
    run_dir = small_disk / "run"
    proc = start_run(LONG, run_dir)
    wait_rows(run_dir / "metrics.csv", 120, proc)
    filler = small_disk / "filler"
    with open(filler, "wb") as fh:  # take every byte left
        try:
            while True:
                fh.write(b"\0" * 65536)
        except OSError:
            pass
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: no space left writing") and "last good checkpoint" in line
    good = load_checkpoint(run_dir / "checkpoints" / "last.pt")["epoch"]
    assert f"(epoch {good})" in line
    filler.unlink()
    proc = start_run(LONG, run_dir)
    assert proc.wait(timeout=300) == 0, proc.communicate()
    rows = read_metrics(run_dir / "metrics.csv")
    assert without_elapsed(rows) == long_reference


# --- cluster faults (local workers; SLURM ones are in test_slurm.py) ---------------------------------------------


@pytest.mark.slow
def test_killed_worker_is_reported_and_a_rerun_finishes_only_what_is_left(tmp_path):
    sweep = tmp_path / "sw"
    args = ["-m", *LONG, "train.max_epochs=300", "train.seed=0,1", "hydra/launcher=local", f"hydra.sweep.dir={sweep}"]
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "launch.py"), *args],
        cwd=tmp_path,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_rows(sweep / "1" / "metrics.csv", 60, proc)
    workers = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    victim = next(
        pid
        for pid in workers
        if f"{sweep}/1" in Path(f"/proc/{pid}/cwd").resolve().as_posix() or _works_on(pid, sweep / "1")
    )
    os.kill(int(victim), signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, out[-2000:] + err[-2000:]
    assert (sweep / "1" / "summary.json").exists(), out[-3000:] + err[-3000:]
    cell = json.loads((sweep / "1" / "summary.json").read_text())
    assert cell["status"] == "failed" and "killed by SIGKILL" in cell["error"]
    assert "cell 1 failed: worker process killed by SIGKILL" in out
    done = sweep / "0" / "metrics.csv"
    before = done.stat().st_mtime_ns
    r = subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), *args],
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert done.stat().st_mtime_ns == before  # the finished cell was not run again
    for i in (0, 1):
        rows = read_metrics(sweep / str(i) / "metrics.csv")
        assert [x["epoch"] for x in rows] == list(range(10, 301, 10))
    assert "sweep summary (2 cells, 0 failed)" in r.stdout


def _works_on(pid: str, cell: Path) -> bool:
    """Whether worker `pid` holds a file of `cell` open (its metrics.csv)."""
    try:
        return any(str(cell) in os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return False
