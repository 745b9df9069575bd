"""Fault injection: real processes, signals, damaged files, full and read-only disks, diverging runs and dying
workers. Every fault ends with a whole metrics.csv (no row lost, repeated or torn) equal to a run that never saw
the fault, and one clear message. W&B faults are in test_wandb_faults.py, SLURM ones in tests/cluster."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from helpers import (
    ROOT,
    assert_same_rows,
    checked_rows,
    compose_cfg,
    file_hashes,
    launch,
    offline_runs,
    start_run,
    summary,
    wait_rows,
    without_elapsed,
)

from grokpipe.core.checkpoint import load_checkpoint, save_latest
from grokpipe.core.errors import ConfigError
from grokpipe.core.outputs import MetricsLog, StorageError, read_metrics
from grokpipe.run.train import run

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
# LONG's first 300 epochs, for the faults that strike before epoch 200: what they leave is long_reference[:30]
FIRST_300 = [o for o in LONG if not o.startswith("train.max_epochs=")] + ["train.max_epochs=300"]
ENV = {**os.environ, "WANDB_MODE": "offline"}


@pytest.fixture(scope="module")
def long_reference(tmp_path_factory) -> list[dict]:
    run_dir = tmp_path_factory.mktemp("ref") / "run"
    proc = start_run(LONG, run_dir)
    assert proc.wait(timeout=300) == 0
    return read_metrics(run_dir / "metrics.csv")


# the tests against long_reference run on one xdist worker (pytest -n, --dist loadgroup), which makes it once
shares_long_reference = pytest.mark.xdist_group("faults_long_reference")


# --- crash-safe state -------------------------------------------------------------------------------------------


def _kill_at(run_dir: Path, epoch: int) -> tuple[int, int]:
    """Launch on `run_dir`, SIGKILL once metrics.csv reaches `epoch`: (last row's epoch, last.pt's epoch) left."""
    proc = start_run(LONG, run_dir)
    wait_rows(run_dir / "metrics.csv", epoch, proc)
    proc.kill()
    proc.wait()
    last_row = read_metrics(run_dir / "metrics.csv")[-1]["epoch"]
    return last_row, load_checkpoint(run_dir / "checkpoints" / "last.pt")["epoch"]


def _relaunch(args: list[str], run_dir: Path, epoch: int) -> None:
    """Launch again on `run_dir`: it says it resumes from `epoch` and finishes with exit 0."""
    proc = start_run(args, run_dir)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert f"resuming {run_dir} from epoch {epoch}" in out


@pytest.mark.slow
@shares_long_reference
def test_repeated_hard_kills_lose_and_repeat_nothing(tmp_path, long_reference):
    run_dir = tmp_path / "run"
    # 230: killed again before the resumed run reaches its next checkpoint, so it resumes from 200 twice
    for stop_at, checkpoint in ((60, 50), (210, 200), (230, 200), (460, 450)):
        last_row, saved = _kill_at(run_dir, stop_at)
        assert saved == checkpoint and last_row > saved  # rows past the checkpoint: the resume must drop them
    _relaunch(LONG, run_dir, 450)
    assert_same_rows(run_dir / "metrics.csv", long_reference)


@pytest.mark.slow
@shares_long_reference
def test_sigterm_checkpoints_where_it_stops_and_resumes(tmp_path, long_reference):
    run_dir = tmp_path / "run"
    proc = start_run(FIRST_300, run_dir)
    wait_rows(run_dir / "metrics.csv", 120, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    done = json.loads((run_dir / "summary.json").read_text())
    assert done["status"] == "interrupted" and state["status"] == "interrupted"
    # saved at the epoch it stopped, not at the last multiple of latest_every
    assert state["epoch"] == done["epochs_run"] >= 120
    assert f"interrupted at epoch {state['epoch']}: checkpoint saved, resume by launching on {run_dir}" in out
    assert checked_rows(run_dir / "metrics.csv")[-1]["epoch"] <= state["epoch"]
    _relaunch(FIRST_300, run_dir, state["epoch"])
    assert_same_rows(run_dir / "metrics.csv", long_reference[:30])
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"


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
    assert_same_rows(tmp_path / "hurt" / "metrics.csv", read_metrics(tmp_path / "straight" / "metrics.csv"))
    assert resumed["final_val_acc"] == straight["final_val_acc"]


def test_a_checkpoint_of_another_config_is_never_resumed(tmp_path):
    run(compose_cfg([*SHORT, "train.max_epochs=20"]), tmp_path)
    with pytest.raises(ConfigError, match=r"holds a run of another config \(optim\.wd: 1\.0 there, 0\.5 here\)"):
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
    checked_rows(sweep / "0" / "metrics.csv", list(range(10, 201, 10)))
    # every evaluation up to the one that found the loss non-finite, once
    checked_rows(sweep / "1" / "metrics.csv", list(range(10, blown["epochs_run"] + 1, 10)))


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
    checked_rows(run_dir / "metrics.csv", list(range(10, done["epochs_run"] + 1, 10)))


# --- storage faults ---------------------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmpfs):
    return tmpfs("4m")


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


def _fill(disk: Path, leave: int = 0) -> Path:
    """Take every byte of `disk` but about `leave` (unbuffered, so nothing is left to flush when it is full)."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        want = max(shutil.disk_usage(disk).free - leave, 0)
        while want > 0:
            try:
                want -= os.write(fd, b"\0" * min(want, 1 << 16))
            except OSError:
                break
    finally:
        os.close(fd)
    return filler


def _stopped_for_space(proc: subprocess.Popen, run_dir: Path, written: str) -> tuple[int, int]:
    """The run stopped with exit 3 and one stderr line naming the file it could not write and a last good
    checkpoint that exists and loads at the epoch it names: (epoch it stopped at, that checkpoint's epoch)."""
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err
    (line,) = err.strip().splitlines()
    last = run_dir / "checkpoints" / "last.pt"
    m = re.fullmatch(
        rf"error: no space left writing {re.escape(str(run_dir / written))}: No space left on device; "
        rf"run stopped at epoch (\d+), last good checkpoint: {re.escape(str(last))} \(epoch (\d+)\)",
        line,
    )
    assert m, line
    assert load_checkpoint(last)["epoch"] == int(m[2])
    assert not list(run_dir.rglob("*.tmp")), "a temp file was left behind"
    return int(m[1]), int(m[2])


PAGE = 4096  # tmpfs gives room by the page: 0 and 1 byte of room are one case


def _layout(numel: int) -> tuple[int, int]:
    """(file size, offset of the zip's central directory) of the checkpoint written with `numel` weights."""
    buf = io.BytesIO()
    torch.save({"model": torch.zeros(numel), "optimizer": {}, "epoch": 3}, buf)
    return len(buf.getvalue()), zipfile.ZipFile(buf).start_dir


def _failing_inside(where: str) -> tuple[int, int]:
    """(weights, bytes of room) for a checkpoint write that fails at a page boundary inside `where`: the header,
    the tensor's bytes, the zip's central directory (its entries), or its last 64 bytes, just short of the end."""
    if where == "header":
        return 300_000, 0
    if where == "tensor":
        return 300_000, 64 * PAGE
    for numel in range(300_000, 300_000 + PAGE):  # each weight moves the directory 4 bytes: a boundary comes by
        size, start = _layout(numel)
        boundary = (size - 1) // PAGE * PAGE
        # the zip pads its records to 64 bytes: "the end" is the last 64 bytes, the directory's entries before them
        inside = start + 64 < boundary <= size - 64 if where == "directory" else size - 64 < boundary < size
        if inside:
            return numel, boundary
    raise AssertionError(f"no checkpoint size puts a page boundary inside the {where}")


@pytest.mark.parametrize("where", ["header", "tensor", "directory", "end"])
def test_a_checkpoint_write_failing_at_any_byte_leaves_the_last_one_whole(small_disk, where):
    numel, room = _failing_inside(where)
    last = small_disk / "checkpoints" / "last.pt"
    save_latest(last, {"model": torch.arange(1000.0), "optimizer": {}, "epoch": 1})
    save_latest(last, {"model": torch.arange(1000.0), "optimizer": {}, "epoch": 2})
    filler = _fill(small_disk, leave=room)
    assert shutil.disk_usage(small_disk).free == room  # the write fails at byte `room` of the file
    with pytest.raises(StorageError) as refused:
        save_latest(last, {"model": torch.zeros(numel), "optimizer": {}, "epoch": 3})  # 1.2 MB: never fits
    assert refused.value.strerror == f"no space left writing {last}: No space left on device"
    assert load_checkpoint(last)["epoch"] == 2 and load_checkpoint(last.with_name("last.prev.pt"))["epoch"] == 1
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.prev.pt", "last.pt"]
    filler.unlink()
    save_latest(last, {"model": torch.zeros(numel), "optimizer": {}, "epoch": 3})
    assert load_checkpoint(last)["epoch"] == 3 and load_checkpoint(last.with_name("last.prev.pt"))["epoch"] == 2


def test_metrics_rows_are_whole_or_absent_and_damage_is_named(tmp_path):
    path = tmp_path / "metrics.csv"
    log = MetricsLog(path, ("epoch", "train_loss", "elapsed"))
    for epoch in (10, 20):
        log.append({"epoch": epoch, "train_loss": 1.5, "elapsed": 0.25})
    log.close()
    whole = path.read_text()
    path.write_text(whole + "30,1.4")  # a kill during the append: the torn last line is dropped
    assert [r["epoch"] for r in read_metrics(path)] == [10, 20]
    path.write_text(whole.replace("20,1.5,0.25", "20,1.5"))  # a short line before the last is damage
    with pytest.raises(ValueError, match=r"metrics.csv: line 3 is not a metrics row"):
        read_metrics(path)
    path.write_text(whole.replace("10,1.5", "1x,1.5"))
    with pytest.raises(ValueError, match=r"line 2 is not a metrics row"):
        read_metrics(path)


@pytest.mark.slow
@shares_long_reference
def test_disk_filling_during_a_metrics_append_stops_cleanly_and_resumes(small_disk, long_reference):
    # a row every epoch and a checkpoint every 100: metrics.csv needs a new page of the disk (about 70 rows) before
    # the next checkpoint is due, so on a full disk the append is what fails
    every_epoch = [o for o in FIRST_300 if not o.startswith("train.latest_every=")] + [
        "train.eval_every=1",
        "train.latest_every=100",
    ]
    run_dir = small_disk / "run"
    proc = start_run(every_epoch, run_dir)
    wait_rows(run_dir / "metrics.csv", 105, proc)
    filler = _fill(small_disk)
    stopped, saved = _stopped_for_space(proc, run_dir, "metrics.csv")
    assert saved == 100 and 105 < stopped < 200
    # the row that did not fit was cut off whole: every line left is a row, up to the epoch before
    checked_rows(run_dir / "metrics.csv", list(range(1, stopped)))
    filler.unlink()
    _relaunch(every_epoch, run_dir, 100)
    rows = checked_rows(run_dir / "metrics.csv", list(range(1, 301)))
    # evaluating every epoch changes nothing of the training: every tenth row is the reference's
    tenth = [r for r in rows if r["epoch"] % 10 == 0]
    assert without_elapsed(tenth) == without_elapsed(long_reference[:30])


@pytest.mark.slow
@shares_long_reference
def test_disk_filling_during_a_checkpoint_write_keeps_the_last_good_one(small_disk, long_reference):
    run_dir = small_disk / "run"
    proc = start_run(FIRST_300, run_dir)
    wait_rows(run_dir / "metrics.csv", 110, proc)
    size = (run_dir / "checkpoints" / "last.pt").stat().st_size
    # room for many metrics rows but half a checkpoint: the next last.pt write fails partway through
    filler = _fill(small_disk, leave=size // 2)
    stopped, saved = _stopped_for_space(proc, run_dir, "checkpoints/last.pt")
    assert stopped % 50 == 0 and saved == stopped - 50
    assert load_checkpoint(run_dir / "checkpoints" / "last.prev.pt")["epoch"] == saved - 50
    rows = checked_rows(run_dir / "metrics.csv")
    assert rows[-1]["epoch"] == stopped  # the rows up to the failed write reached the disk; the resume drops them
    filler.unlink()
    _relaunch(FIRST_300, run_dir, saved)
    assert_same_rows(run_dir / "metrics.csv", long_reference[:30])


# --- cluster faults (local workers; SLURM ones are in test_slurm.py) ---------------------------------------------


@pytest.mark.slow
@shares_long_reference
def test_killed_worker_is_reported_and_a_rerun_finishes_only_what_is_left(tmp_path, long_reference):
    sweep = tmp_path / "sw"
    # cell 1 is seed 0, the reference run's seed: its resumed rows must equal the reference's first 300 epochs
    args = ["-m", *LONG, "train.max_epochs=300", "train.seed=1,0", "hydra/launcher=local", f"hydra.sweep.dir={sweep}"]
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
    last_row = read_metrics(sweep / "1" / "metrics.csv")[-1]["epoch"]
    assert last_row > load_checkpoint(sweep / "1" / "checkpoints" / "last.pt")["epoch"]
    assert proc.returncode == 1, out[-2000:] + err[-2000:]
    assert (sweep / "1" / "summary.json").exists(), out[-3000:] + err[-3000:]
    cell = json.loads((sweep / "1" / "summary.json").read_text())
    assert cell["status"] == "failed" and "killed by SIGKILL" in cell["error"]
    assert "cell 1 failed: worker process killed by SIGKILL" in out
    before = file_hashes(sweep / "0")
    r = subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), *args],
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert file_hashes(sweep / "0") == before  # the finished cell was not run again: every byte unchanged
    checked_rows(sweep / "0" / "metrics.csv", list(range(10, 301, 10)))
    assert_same_rows(sweep / "1" / "metrics.csv", long_reference[:30])
    assert "sweep summary (2 cells, 0 failed)" in r.stdout


def _works_on(pid: str, cell: Path) -> bool:
    """Whether worker `pid` holds a file of `cell` open (its metrics.csv)."""
    try:
        return any(str(cell) in os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return False
