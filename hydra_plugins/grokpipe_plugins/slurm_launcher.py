"""`hydra/launcher=slurm`: hydra-submitit-launcher's SLURM launcher, tolerant of cells that die, for sweeps of any
size, with a status line while it waits.

Upstream sends a sweep as one job array, waits for the results in order and raises at the first job without one
(killed for memory, node failure, scancel), abandoning the wait for the others; and where SLURM keeps no accounting
(sacct fails) it never learns that a cancelled job is gone and waits forever. Here a job is awaited until its result
file appears or it has left the queue (squeue) without one; the latter becomes a failed cell with its cause in
summary.json, and the sweep waits for every other cell before its summary.

A sweep the cluster takes as one array goes out as one, as upstream sends it. A larger one goes out as several arrays
of at most `max_array_size` tasks (null: the cluster's MaxArraySize, or `max_array_tasks` of its
SchedulerParameters when lower, from `scontrol show config`; SLURM refuses an array index of MaxArraySize or more),
with never more tasks queued at once than `max_submit_jobs` (null: the MaxSubmitJobs of the user's association, from
`sacctmgr` where SLURM keeps accounting) or array_parallelism: a further array goes out as earlier cells finish, and
a submission the cluster refuses for a limit of its own waits for them the same way. The arrays are awaited together
and returned as one sweep, in cell order. MaxJobs (running jobs per user) needs nothing: SLURM holds the extra tasks
pending.
"""

# no `from __future__ import annotations`: Hydra's plugin scan runs this module outside sys.modules, where a
# dataclass cannot resolve string annotations
import contextlib
import getpass
import io
import logging
import os
import re
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf, SlurmQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as SubmititSlurmLauncher
from omegaconf import OmegaConf

from grokpipe.core.cells import CellDied, mark_failed
from grokpipe.core.errors import fail
from grokpipe.sweep.status import ENDED, PENDING, RUNNING, SweepStatus

log = logging.getLogger(__name__)
POLL_S = 2.0  # between looks at the queue and the result files
DEFAULT_MAX_ARRAY_SIZE = 1001  # SLURM's own default, where the cluster cannot be asked
# squeue states of a task that holds its resources; any other state in the queue waits for them
RUNNING_STATES = {"RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT", "RESIZING"}


@dataclass
class GrokpipeSlurmConf(SlurmQueueConf):
    """Upstream's keys, and the limits that split a sweep into arrays and the status line's period."""

    _target_: str = "hydra_plugins.grokpipe_plugins.slurm_launcher.SlurmLauncher"
    max_array_size: int | None = None
    max_submit_jobs: int | None = None
    status_every_s: float = 60.0
    wait: bool = True  # false: submit a driver job that runs the waiting launcher on the cluster, and return
    driver_timeout_min: int = 10080  # the driver job's time limit: the whole sweep's (a week)


ConfigStore.instance().store(group="hydra/launcher", name="grokpipe_slurm", node=GrokpipeSlurmConf, provider="grokpipe")


def _last_error_line(job) -> str:
    try:
        lines = [line for line in Path(job.paths.stderr).read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    hits = [line for line in lines if any(w in line.lower() for w in ("error", "killed", "oom", "cancelled"))]
    return (hits or lines or ["empty log"])[-1].strip()[:300]


def _queue_states(job_ids: Sequence[str]) -> dict[str, str] | None:
    """squeue's state of every task SLURM still holds of these jobs (JOB_k or JOB -> PENDING, RUNNING, ...);
    None when SLURM cannot be asked."""
    if not job_ids:
        return {}
    cmd = ["squeue", "-h", "-r", "-j", ",".join(job_ids), "-o", "%i %T"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return {} if "Invalid job id" in out.stderr else None
    return dict(line.split(None, 1) for line in out.stdout.splitlines() if len(line.split()) == 2)


def _slurm_config() -> str:
    try:
        return subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


def cluster_max_array_size(config: str) -> int | None:
    """The most tasks one array may hold, from `scontrol show config`: MaxArraySize (indices 0 to MaxArraySize-1; 0
    turns arrays off: one task each) or SchedulerParameters' max_array_tasks when lower. None when it says neither."""
    size = re.search(r"^MaxArraySize\s*=\s*(\d+)", config, re.M)
    tasks = re.search(r"^SchedulerParameters\s*=.*\bmax_array_tasks=(\d+)", config, re.M)
    limits = [int(m[1]) for m in (size, tasks) if m]
    return max(1, min(limits)) if limits else None


def association_max_submit(account: str | None) -> int | None:
    """MaxSubmitJobs of the user's associations (the lowest, of `account`'s where one is set): jobs pending or running
    at once, each array task counting as one. None where no limit is set or SLURM keeps no accounting."""
    cmd = ["sacctmgr", "-nP", "show", "assoc", "where", f"user={getpass.getuser()}"]
    cmd += [f"account={account}"] if account else []
    try:
        out = subprocess.run([*cmd, "format=MaxSubmitJobs"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    limits = [int(v) for v in out.stdout.split() if v.isdigit()] if out.returncode == 0 else []
    return min(limits) if limits else None


def _limit(key: str, value) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        fail(f"hydra.launcher.{key}={value} is not allowed: a positive integer, or null to ask the cluster")
    return value


def _sbatch_reason(message: str) -> str:
    """The last line of sbatch's refusal, without its `sbatch: error:` prefix."""
    lines = [line.strip() for line in message.splitlines() if line.strip()] or ["no reason given"]
    return re.sub(r"^sbatch: error:\s*", "", lines[-1])


def _refused_for_a_limit(message: str) -> bool:
    """sbatch refused a submission for a jobs-per-user limit (association, QOS): it goes in once earlier jobs end."""
    text = message.lower()
    return "job submit limit" in text or "maxsubmitjob" in text or "submitjoblimit" in text


class _Task:
    """One launcher job of this launch: its cell number, arguments, and once submitted, its submitit job."""

    def __init__(self, num: int, params: tuple) -> None:
        self.num, self.params = num, params
        self.job = None
        self.gone = 0  # polls in a row that found it out of the queue without a result
        self.state = PENDING
        self.result: JobReturn | None = None


class SlurmLauncher(SubmititSlurmLauncher):
    def __init__(
        self,
        max_array_size: int | None = None,
        max_submit_jobs: int | None = None,
        status_every_s: float = 60.0,
        wait: bool = True,
        driver_timeout_min: int = 10080,
        **params: Any,
    ) -> None:
        super().__init__(**params)  # upstream's keys only: they all go to submitit
        self.max_array_size, self.max_submit_jobs = max_array_size, max_submit_jobs
        self.status_every_s = status_every_s
        if not isinstance(wait, bool):
            fail(f"hydra.launcher.wait={wait!r} is not allowed: true or false")
        self.wait, self.driver_timeout_min = wait, _limit("driver_timeout_min", driver_timeout_min)

    def _executor(self):
        """Upstream's executor, built from the same keys as upstream builds it."""
        import submitit

        init = {"folder": self.params["submitit_folder"], "slurm_max_num_timeout": self.params["max_num_timeout"]}
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init)
        shared = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(
            **{
                k if k in shared else f"{self._EXECUTOR}_{k}": v
                for k, v in self.params.items()
                if k not in ("max_num_timeout", "submitit_folder")
            }
        )
        return executor

    def _limits(self, n: int) -> tuple[int, int | None]:
        """(tasks per array, tasks queued at once or None for no limit) for a launch of n jobs."""
        array_size = _limit("max_array_size", self.max_array_size)
        submit = _limit("max_submit_jobs", self.max_submit_jobs)
        if array_size is None:
            array_size = cluster_max_array_size(_slurm_config())
            if array_size is None:
                array_size = DEFAULT_MAX_ARRAY_SIZE
                log.warning(f"the cluster's MaxArraySize is unknown (scontrol show config): assuming {array_size}")
        if submit is None:
            submit = association_max_submit(self.params.get("account"))
        if n <= array_size and (submit is None or n <= submit):
            return n, None  # one array, as upstream sends it
        return array_size, min(submit or n, self.params.get("array_parallelism") or n)

    def detach(self, sweep_dir: Path) -> None:
        """Submit one small SLURM job that runs this very command with `hydra.launcher.wait=true` in this sweep dir
        (the waiting launcher on the cluster: arrays past the cluster's limits as room frees, requeues, then the
        summary, database, figures and logger's summary), print how to follow it, and end this process (exit 0)."""
        import shlex
        import sys

        argv = [a for a in sys.argv[1:] if not a.startswith(("hydra.launcher.wait=", "hydra.sweep.dir="))]
        argv += [f"hydra.sweep.dir={sweep_dir}", "hydra.launcher.wait=true"]  # the dir this launch resolved
        log_dir = sweep_dir / ".submitit"
        log_dir.mkdir(parents=True, exist_ok=True)
        opts = [f"--job-name=grokpipe-sweep-{sweep_dir.name}", f"--output={log_dir}/driver_%j.log", "--ntasks=1",
                "--cpus-per-task=1", "--mem=2G", f"--time={self.driver_timeout_min}"]  # fmt: skip
        opts += [f"--{k}={self.params[k]}" for k in ("partition", "account", "qos") if self.params.get(k)]
        script = "\n".join(["#!/bin/bash", f"cd {shlex.quote(os.getcwd())}",
                            shlex.join([sys.executable, str(Path(sys.argv[0]).resolve()), *argv])])  # fmt: skip
        try:
            out = subprocess.run(["sbatch", "--parsable", *opts], input=script + "\n", capture_output=True,
                                 text=True, timeout=60)  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as exc:
            fail(f"sbatch could not be run for the detached sweep: {exc}; nothing was launched")
        if out.returncode != 0:
            fail(f"sbatch refused the sweep's driver job: {_sbatch_reason(out.stderr)}; nothing was launched")
        job = out.stdout.strip().split(";")[0]
        print(
            f"submitted: SLURM job {job} runs this sweep on the cluster (it submits the cells' arrays as the cluster "
            f"has room, then writes the summary, database and figures)\n"
            f"sweep dir: {sweep_dir}\n"
            f"watch:     python -m grokpipe status {sweep_dir} --watch\n"
            f"collect:   python -m grokpipe summarize {sweep_dir}   (the job does it when the sweep ends)\n"
            f"its log:   {log_dir}/driver_{job}.log",
            flush=True,
        )
        raise SystemExit(0)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from submitit.core.utils import FailedJobError

        assert self.config is not None and len(job_overrides) > 0
        if not self.wait:
            self.detach(Path(str(self.config.hydra.sweep.dir)).resolve())
        executor = self._executor()
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        log.info(f"Submitit '{self._EXECUTOR}' sweep output dir : {sweep_dir}")
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))

        tasks = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            params = (list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state())
            tasks.append(_Task(idx, params))
        array_size, in_flight_cap = self._limits(len(tasks))
        if in_flight_cap is not None:
            queued = f", at most {in_flight_cap} queued at once" if in_flight_cap < len(tasks) else ""
            log.info(f"{len(tasks)} jobs as arrays of at most {array_size}{queued}")

        status = SweepStatus(sweep_dir, [t.num for t in tasks], self.status_every_s)
        unsent = list(tasks)
        while True:
            in_flight = [t for t in tasks if t.job is not None and t.result is None]
            room = len(unsent) if in_flight_cap is None else in_flight_cap - len(in_flight)
            if unsent and room > 0:
                chunk = unsent[: min(array_size, room)]
                try:
                    with contextlib.redirect_stderr(io.StringIO()):  # submitit echoes sbatch's refusal: said below
                        jobs = executor.map_array(self, *zip(*(t.params for t in chunk)))
                except FailedJobError as exc:
                    reason = _sbatch_reason(str(exc))
                    if _refused_for_a_limit(str(exc)) and in_flight:
                        log.info(f"the cluster takes no more jobs now ({reason}): waiting for {len(in_flight)}")
                        in_flight_cap = len(in_flight)
                    elif len(unsent) == len(tasks):
                        if "array specification" in reason and self.max_array_size is not None:
                            reason += f" (hydra.launcher.max_array_size={self.max_array_size}: null asks the cluster)"
                        fail(f"sbatch refused the sweep's jobs: {reason}; nothing was launched")
                    else:
                        for t in chunk:
                            self._failed(sweep_dir, t, f"sbatch refused the job: {reason}")
                        del unsent[: len(chunk)]
                else:
                    for t, job in zip(chunk, jobs):
                        t.job = job
                    del unsent[: len(chunk)]
                    if len(chunk) < len(tasks):
                        array = jobs[0].job_id.split("_")[0]
                        log.info(f"jobs {chunk[0].num}-{chunk[-1].num} submitted as SLURM job {array}")
                    continue  # another array may fit before the next look at the queue
            self._poll(sweep_dir, tasks)
            status.update({t.num: t.state for t in tasks})
            if not unsent and all(t.result is not None for t in tasks):
                break
            time.sleep(POLL_S)
        status.close()
        return [t.result for t in tasks]

    def _poll(self, sweep_dir: Path, tasks: list[_Task]) -> None:
        """Each submitted job's state; a job that has a result file, or has left the queue twice in a row without
        one (to let files land), is resolved to its JobReturn."""
        waiting = [t for t in tasks if t.job is not None and t.result is None]
        queue = _queue_states(sorted({t.job.job_id.split("_")[0] for t in waiting}))
        for t in waiting:
            if t.job.paths.result_pickle.exists():
                t.result = self._result(sweep_dir, t)
                continue
            if queue is None:  # SLURM cannot be asked: as it was
                continue
            state = queue.get(t.job.job_id)
            t.gone = 0 if state is not None else t.gone + 1
            if t.gone >= 2:
                t.result = self._result(sweep_dir, t)
            elif state is not None:
                t.state = RUNNING if state in RUNNING_STATES else PENDING

    def _result(self, sweep_dir: Path, t: _Task) -> JobReturn:
        job = t.job
        t.state = ENDED
        if job.paths.result_pickle.exists():
            try:
                return job.results()[0]
            except Exception as exc:  # the job's own error, pickled by submitit
                error = f"SLURM job {job.job_id} failed ({type(exc).__name__}); {_last_error_line(job)}"
        else:
            error = f"SLURM job {job.job_id} ended without a result; {_last_error_line(job)}"
        return self._failed(sweep_dir, t, error)

    @staticmethod
    def _failed(sweep_dir: Path, t: _Task, error: str) -> JobReturn:
        mark_failed(sweep_dir, t.num, error)
        t.state = ENDED
        t.result = JobReturn(status=JobStatus.FAILED, _return_value=CellDied(error))
        return t.result
