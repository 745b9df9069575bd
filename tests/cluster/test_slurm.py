"""Sweeps on a real SLURM cluster (scripts/slurm_up.sh): one job array, several where the grid is larger than the
cluster's MaxArraySize, and a requeue that resumes exactly.

Skipped when no cluster answers, unless CI is set: then a missing cluster is a failure (tests/cluster/conftest.py).
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers import (
    ROOT,
    assert_same_rows,
    checked_rows,
    file_hashes,
    launch,
    offline_runs,
    run_once,
    summary,
    wait_rows,
    without_elapsed,
)
from omegaconf import OmegaConf

from grokpipe.core.checkpoint import load_checkpoint
from grokpipe.core.outputs import read_metrics

pytestmark = pytest.mark.slurm
TINY = ["model=mlp", "task.p=23", "train.max_epochs=60", "logger=none", "train.print_every=0", "train.plot=false"]
ONE_JOB_PER_CELL = ["hydra.sweeper.pack=false"]  # one job per cell whatever pack=auto decides


def test_grid_goes_to_slurm_as_one_array_job(tmp_path):
    sweep = tmp_path / "sw"
    r = launch(
        [
            "-m",
            "hydra/launcher=slurm",
            *TINY,
            *ONE_JOB_PER_CELL,
            "model.d_model=8,16",
            "optim.wd=0.1,1",
            f"hydra.sweep.dir={sweep}",
        ],
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


def test_a_grid_larger_than_the_clusters_array_limit_goes_out_as_several_arrays(tmp_path):
    """scripts/slurm_up.sh sets MaxArraySize=5: 8 cells are an array of 5 and one of 3, awaited as one sweep."""
    config = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, check=True).stdout
    assert re.search(r"^MaxArraySize\s*=\s*5$", config, re.M), "not scripts/slurm_up.sh's MaxArraySize"
    sweep = tmp_path / "sw"
    run = [o if not o.startswith("train.max_epochs=") else "train.max_epochs=30" for o in TINY]
    grid = ["model.d_model=8,16", "optim.wd=0.1,1", "train.seed=0,1"]
    r = launch(
        ["-m", "hydra/launcher=slurm", *run, *ONE_JOB_PER_CELL, *grid, f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    first, second = _array_jobs(sweep)
    arrays = [(sweep / ".submitit" / job / f"{job}_submission.sh").read_text() for job in (first, second)]
    assert "#SBATCH --array=0-4%5" in arrays[0] and "#SBATCH --array=0-2%3" in arrays[1]
    tasks = sorted(p.name for p in (sweep / ".submitit").iterdir() if re.fullmatch(r"\d+_\d+", p.name))
    assert tasks == sorted([*(f"{first}_{i}" for i in range(5)), *(f"{second}_{i}" for i in range(3))])
    # each cell in its own dir, the second array's tasks numbered on from the first's
    for cell in json.loads((sweep / "cells.json").read_text()):
        s = json.loads((Path(cell["dir"]) / "summary.json").read_text())
        assert s["status"] == "completed"
        assert f"model.d_model={s['d_model']}" in cell["overrides"] and f"train.seed={s['seed']}" in cell["overrides"]
    assert f"sweep summary (8 cells, 0 failed): {sweep}" in r.stdout
    assert len(list(csv.DictReader(open(sweep / "cells.csv")))) == 8
    status = [line for line in r.stderr.splitlines() if line.startswith("sweep: ")]
    assert status[-1].startswith("sweep: 8/8 done (0 grokked), 0 running, 0 pending, 0 failed; "), status


def test_a_jobs_per_user_limit_sends_the_rest_as_earlier_cells_finish(tmp_path):
    """max_submit_jobs=2 (an association's MaxSubmitJobs, where SLURM keeps accounting): 3 cells go out as an array
    of 2, and the third as a job of its own once one of those has finished."""
    sweep = tmp_path / "sw"
    run = [o if not o.startswith("train.max_epochs=") else "train.max_epochs=30" for o in TINY]
    args = [
        "-m",
        "hydra/launcher=slurm",
        *run,
        "train.seed=0,1,2",
        "hydra.launcher.max_submit_jobs=2",
        *ONE_JOB_PER_CELL,
    ]
    r = launch([*args, f"hydra.sweep.dir={sweep}"], cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    first, second = _array_jobs(sweep)
    scripts = [sweep / ".submitit" / job / f"{job}_submission.sh" for job in (first, second)]
    assert "#SBATCH --array=0-1%2" in scripts[0].read_text() and "--array" not in scripts[1].read_text()
    finished = min((sweep / ".submitit" / f"{first}_{i}" / f"{first}_{i}_0_result.pkl").stat().st_mtime for i in (0, 1))
    assert scripts[1].stat().st_mtime >= finished, "the third cell went out before a place was free"
    assert [json.loads((sweep / str(i) / "summary.json").read_text())["seed"] for i in range(3)] == [0, 1, 2]
    assert f"sweep summary (3 cells, 0 failed): {sweep}" in r.stdout


EPOCHS = 400  # RUN's budget: the cancels below strike at epoch 100 to 130, with room to spare
RUN = [
    "model=mlp",
    "task.p=97",
    "optim.lr=3e-3",
    f"train.max_epochs={EPOCHS}",
    "train.latest_every=100",
    "train.checkpoint_every=0",
    "train.patience=null",
    "train.plot=false",
    "train.print_every=100",
]
# the interrupted cell: at lr 1e-2 seed 7 memorises by epoch 70 and groks at 440 (at RUN's 3e-3: 110 and 1330), so an
# interrupt at epoch 300 falls between the two and the resumed run's grok_epoch is compared, in 800 epochs, not 1500
INTERRUPTED = [o for o in RUN if not o.startswith(("optim.lr=", "train.max_epochs="))]
INTERRUPTED += ["optim.lr=1e-2", "train.max_epochs=800"]


# scontrol requeue: SLURM's SIGTERM, as on preemption; USR2: submitit's time-limit signal, after which
# submitit requeues the job itself
@pytest.mark.parametrize("interrupt", [["scontrol", "requeue"], ["scancel", "--signal=USR2"]], ids=["requeue", "usr2"])
def test_interrupted_cell_resumes_with_identical_metrics(tmp_path, interrupt, shared_dir):
    sweep = tmp_path / "sw"
    env = {**os.environ, "WANDB_MODE": "offline", "HOME": str(tmp_path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "launch.py"),
            "-m",
            "hydra/launcher=slurm",
            *INTERRUPTED,
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
    # the uninterrupted reference, same seed and thread count, while the cluster runs the cell (one for both signals)
    ref_args = [*INTERRUPTED, "logger=none", "train.seed=7"]
    reference = _in_background(run_once, shared_dir, "interrupted_ref", ref_args, {"OMP_NUM_THREADS": "1"})
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
    ref = reference.result(timeout=600)

    cell = sweep / "0"
    assert_same_rows(cell / "metrics.csv", read_metrics(ref / "metrics.csv"))
    log = _job_log(sweep, script.parent.name)  # a single job is no array: its task is the job itself
    stop = re.search(
        rf"interrupted at epoch (\d+): checkpoint saved, resume by launching on {re.escape(str(cell))}\n", log
    )
    assert stop, f"the cell was not interrupted: {log[-2000:]}"
    assert f"resuming {cell} from epoch {stop[1]}\n" in log[stop.end() :], (
        f"not resumed where it stopped: {log[-2000:]}"
    )
    runs = offline_runs(cell)
    assert len(runs) == 2  # W&B offline writes one dir per attempt, under the same run id
    ids = {summary(r)["run_id"] for r in runs}
    assert ids == {(cell / "wandb_id.txt").read_text().strip()}
    resumed, straight = (json.loads((d / "summary.json").read_text()) for d in (cell, ref))
    assert resumed["status"] == straight["status"] and resumed["grok_epoch"] == straight["grok_epoch"]
    assert straight["grok_epoch"] is not None  # it groks: the grok_epoch compared is one the resumed run had to find


# scancel: SLURM's SIGTERM, after which the cell checkpoints where it stops; sigkill: the task's process killed
# as the OOM killer would (scancel --signal=KILL is a plain cancel to SLURM), leaving rows beyond its last
# checkpoint that the resume must drop and train again
@pytest.mark.parametrize("cancel", ["scancel", "sigkill"])
def test_a_cancelled_array_task_is_reported_and_a_rerun_finishes_it(tmp_path, cancel, shared_dir):
    sweep = tmp_path / "sw"
    run = [*RUN, "logger=none"]
    args = [sys.executable, str(ROOT / "launch.py"), "-m", "hydra/launcher=slurm", *run, "train.seed=0,1"]
    args.append(f"hydra.sweep.dir={sweep}")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_rows(sweep / "1" / "metrics.csv", 130, proc, timeout=300)  # past the checkpoint of epoch 100
    (job,) = _array_jobs(sweep)
    if cancel == "scancel":
        subprocess.run(["scancel", f"{job}_1"], check=True)
    else:
        os.kill(_task_pid(f"{job}_1"), signal.SIGKILL)
    # the uninterrupted reference of cell 1 (seed 1), while the cluster finishes cell 0 (one for both cancels)
    reference = _in_background(run_once, shared_dir, "cancelled_ref", [*run, "train.seed=1"], env)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 1, out[-3000:]
    cell = json.loads((sweep / "1" / "summary.json").read_text())
    assert cell["status"] == "failed" and f"SLURM job {job}_1 ended without a result" in cell["error"]
    assert json.loads((sweep / "0" / "summary.json").read_text())["status"] in ("completed", "grokked")
    assert f"cell 1 failed: SLURM job {job}_1 ended without a result" in out
    saved = load_checkpoint(sweep / "1" / "checkpoints" / "last.pt")["epoch"]
    left = checked_rows(sweep / "1" / "metrics.csv")[-1]["epoch"]
    if cancel == "scancel":
        stopped = int(re.search(r"interrupted at epoch (\d+): checkpoint saved", _job_log(sweep, f"{job}_1"))[1])
        assert saved == stopped and left == stopped // 10 * 10
    else:
        assert saved % 100 == 0 and left > saved, (saved, left)  # rows the resume must drop
        assert cell["error"].endswith("Killed"), cell["error"]  # the cause, from the job's log

    finished, record = _run_files(sweep / "0"), _job_record(sweep / "0")
    again = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert _run_files(sweep / "0") == finished  # the finished cell was not trained again
    _assert_only_the_job_record_moved(record, _job_record(sweep / "0"))
    checked_rows(sweep / "0" / "metrics.csv", list(range(10, EPOCHS + 1, 10)))
    assert f"resuming {sweep / '1'} from epoch {saved}" in _job_log(sweep, f"{_array_jobs(sweep)[-1]}_1")
    ref = reference.result(timeout=600)
    assert_same_rows(sweep / "1" / "metrics.csv", read_metrics(ref / "metrics.csv"))
    a, b = (json.loads((d / "summary.json").read_text()) for d in (sweep / "1", ref))
    assert (a["status"], a["grok_epoch"], a["epochs_run"]) == (b["status"], b["grok_epoch"], b["epochs_run"])


def test_packed_grid_is_one_array_task_per_shape_and_a_signalled_pack_resumes(tmp_path):
    """hydra.sweeper.pack=true: 4 cells of 2 shapes -> a 2-task array; submitit's time-limit signal (USR2) to
    one pack checkpoints every member, submitit requeues it, and each member's metrics equal an uninterrupted pack's."""
    sweep, ref = tmp_path / "sw", tmp_path / "ref"
    grid = [
        *RUN,
        "train.max_epochs=600",  # the signal comes at epoch 300
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


def test_a_cancelled_pack_job_fails_its_cells_and_a_rerun_finishes_them(tmp_path):
    """scancel of one pack's array task: its unfinished cells fail naming the job, the other pack finishes, and
    the same command again resumes the cancelled pack to what an uninterrupted pack writes."""
    sweep, ref = tmp_path / "sw", tmp_path / "ref"
    cmd = [sys.executable, str(ROOT / "launch.py"), "-m", *RUN, "logger=none"]
    seeds = ["train.seed=3,4", "hydra.sweeper.pack=true"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [*cmd, "model.d_model=32,64", *seeds, "hydra/launcher=slurm", f"hydra.sweep.dir={sweep}"]
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_rows(sweep / "2" / "metrics.csv", 100, proc, timeout=300)  # cells 2 and 3 are pack 1 (d_model 64)
    assert [p["cells"] for p in json.loads((sweep / "packs.json").read_text())] == [[0, 1], [2, 3]]
    (job,) = _array_jobs(sweep)
    subprocess.run(["scancel", f"{job}_1"], check=True)
    # the uninterrupted reference of pack 1 alone: the same two members, as cells 0 and 1 of a one-pack sweep
    reference = subprocess.Popen(
        [*cmd, "model.d_model=64", *seeds, f"hydra.sweep.dir={ref}"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 1, out[-3000:]

    # SLURM's SIGTERM stopped the pack at an epoch; both members checkpointed there before the job ended
    log = _job_log(sweep, f"{job}_1")
    stopped = int(re.search(r"interrupted at epoch (\d+): checkpoints saved, resume by packing", log)[1])
    error = f"SLURM job {job}_1 ended without a result"
    for num in (2, 3):
        cell = json.loads((sweep / str(num) / "summary.json").read_text())
        assert cell["status"] == "failed" and cell["error"].startswith(error), cell
        assert load_checkpoint(sweep / str(num) / "checkpoints" / "last.pt")["epoch"] == stopped
        assert checked_rows(sweep / str(num) / "metrics.csv")[-1]["epoch"] == stopped // 10 * 10
        assert f"cell {num} failed: {error}" in out
    for num in (0, 1):  # pack 0 went on to the end
        assert json.loads((sweep / str(num) / "summary.json").read_text())["status"] in ("completed", "grokked")
        checked_rows(sweep / str(num) / "metrics.csv", list(range(10, EPOCHS + 1, 10)))
    assert "sweep summary (4 cells, 2 failed)" in out
    cells = list(csv.DictReader(open(sweep / "cells.csv")))
    assert [c["status"] == "failed" and c["error"].startswith(error) for c in cells] == [False, False, True, True]

    finished = {num: file_hashes(sweep / str(num)) for num in (0, 1)}
    again = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "sweep summary (4 cells, 0 failed)" in again.stdout
    assert {num: file_hashes(sweep / str(num)) for num in (0, 1)} == finished  # not trained again: every byte kept
    rerun = _array_jobs(sweep)[-1]
    assert f"resuming a pack of 2 from epoch {stopped}" in _job_log(sweep, f"{rerun}_1")
    ref_out, _ = reference.communicate(timeout=600)
    assert reference.returncode == 0, ref_out[-2000:]
    for num, ref_num in ((2, 0), (3, 1)):
        rows = assert_same_rows(sweep / str(num) / "metrics.csv", read_metrics(ref / str(ref_num) / "metrics.csv"))
        assert rows[-1]["epoch"] == EPOCHS
        a, b = (json.loads((d / "summary.json").read_text()) for d in (sweep / str(num), ref / str(ref_num)))
        assert (a["status"], a["grok_epoch"], a["epochs_run"]) == (b["status"], b["grok_epoch"], b["epochs_run"])


def _in_background(fn, *args) -> Future:
    """fn(*args) in a thread of its own while the test goes on: its result (or its exception) from the future."""
    pool = ThreadPoolExecutor(1)
    try:
        return pool.submit(fn, *args)
    finally:
        pool.shutdown(wait=False)


def _array_jobs(sweep: Path) -> list[str]:
    """The SLURM job ids of a sweep dir's launches, oldest first: the other tests' jobs may be in the queue too."""
    return sorted((p.parent.name for p in (sweep / ".submitit").glob("*/*_submission.sh")), key=int)


def _job_log(sweep: Path, task: str) -> str:
    """Everything SLURM job or array task `task` (JOB, JOB_k) printed, over every attempt (a requeue appends)."""
    return "".join(p.read_text() for p in (sweep / ".submitit").glob(f"{task}/*_log.out"))


def _run_files(cell: Path) -> dict[str, str]:
    """file_hashes of a cell less the job's own record, which a rerun's job rewrites even for a finished cell:
    Hydra's .hydra/hydra.yaml names the new SLURM job, and submitit appends its lines to launch.log."""
    return {k: v for k, v in file_hashes(cell).items() if k not in (".hydra/hydra.yaml", "launch.log")}


def _job_record(cell: Path) -> tuple[dict, str]:
    """The two files _run_files leaves out: Hydra's record of the job (hydra.yaml, as data) and the job's log."""
    return OmegaConf.to_container(OmegaConf.load(cell / ".hydra" / "hydra.yaml")), (cell / "launch.log").read_text()


def _assert_only_the_job_record_moved(before: tuple[dict, str], after: tuple[dict, str]) -> None:
    """A rerun of a finished cell changes hydra.yaml only where it names the job (its id: the new SLURM job; the
    runtime's output dir and cwd) and only appends to launch.log: the run's record is otherwise what it was."""

    def job_free(h: dict) -> dict:
        h = json.loads(json.dumps(h))
        h["hydra"]["job"].pop("id", None)
        h["hydra"].get("runtime", {}).pop("cwd", None)
        return h

    (hydra_a, log_a), (hydra_b, log_b) = before, after
    assert job_free(hydra_a) == job_free(hydra_b)
    assert hydra_a["hydra"]["job"]["id"] != hydra_b["hydra"]["job"]["id"]  # the new job, named
    assert log_b.startswith(log_a) and len(log_b) > len(log_a)  # appended, nothing of the first run's log lost


def _task_pid(task: str) -> int:
    """The pid of array task `task`'s training process: local task 0 of its step 0."""
    raw = subprocess.run(["squeue", "-h", "-j", task, "-o", "%A"], capture_output=True, text=True, check=True)
    pids = subprocess.run(["scontrol", "listpids", raw.stdout.strip()], capture_output=True, text=True, check=True)
    return next(
        int(pid)
        for pid, _, step, local, *_ in map(str.split, pids.stdout.splitlines()[1:])
        if (step, local) == ("0", "0")
    )


def test_a_detached_sweep_returns_at_once_and_finishes_on_the_cluster(tmp_path):
    """hydra.launcher.wait=false: the command returns within seconds, naming the driver job, the sweep dir and the
    commands to watch and collect; the driver job (the waiting launcher, on the cluster) sends 8 cells past
    MaxArraySize 5 as two arrays and writes the summary and database, long after the launching process is gone."""
    sweep = tmp_path / "sw"
    run = [o if not o.startswith("train.max_epochs=") else "train.max_epochs=30" for o in TINY]
    grid = ["model.d_model=8,16", "optim.wd=0.1,1", "train.seed=0,1"]
    args = ["-m", "hydra/launcher=slurm", "hydra.launcher.wait=false", *run, *ONE_JOB_PER_CELL, *grid]
    start = time.monotonic()
    r = launch([*args, f"hydra.sweep.dir={sweep}"], cwd=tmp_path, timeout=120)
    returned_s = time.monotonic() - start
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert returned_s < 30, returned_s  # composing and checking 8 cells, one sbatch: no waiting on the cells
    (driver,) = re.findall(r"^submitted: SLURM job (\d+) runs this sweep", r.stdout, re.M)
    assert f"watch:     python -m grokpipe status {sweep} --watch" in r.stdout
    assert f"collect:   python -m grokpipe summarize {sweep}" in r.stdout
    assert not (sweep / "sweep_summary.csv").exists()  # nothing summarised by the process that returned
    deadline = time.monotonic() + 540
    while subprocess.run(["squeue", "-h", "-j", driver], capture_output=True, text=True).stdout.strip():
        assert time.monotonic() < deadline, "the driver job is still in the queue"
        time.sleep(2)
    log = (sweep / ".submitit" / f"driver_{driver}.log").read_text()
    assert f"sweep summary (8 cells, 0 failed): {sweep}" in log, log[-3000:]
    assert len(_array_jobs(sweep)) == 2  # past MaxArraySize 5: two arrays, both sent by the driver
    cells = json.loads((sweep / "cells.json").read_text())
    assert all(json.loads((Path(c["dir"]) / "summary.json").read_text())["status"] == "completed" for c in cells)
    assert (sweep / "sweep_summary.csv").is_file() and (sweep / "experiments.db").is_file()
    status = subprocess.run([sys.executable, "-m", "grokpipe", "status", str(sweep)], capture_output=True, text=True)
    assert status.stdout.startswith("sweep: 8/8 done (0 grokked), 0 running, 0 pending, 0 failed")
