"""`hydra/launcher=slurm`: hydra-submitit-launcher's SLURM launcher, tolerant of cells that die.

Upstream waits for the array's results in order and raises at the first job without one (killed for
memory, node failure, scancel), abandoning the wait for the others; and where SLURM keeps no accounting
(sacct fails) it never learns that a cancelled job is gone and waits forever. Here a job is awaited until
its result file appears or it has left the queue (squeue) without one; the latter becomes a failed cell
with its cause in summary.json, and the sweep waits for every other cell before its summary.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from hydra.core.utils import JobReturn, JobStatus
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as SubmititSlurmLauncher

from grokpipe.sweep import CellDied, mark_failed


def _last_error_line(job) -> str:
    try:
        lines = [line for line in Path(job.paths.stderr).read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    hits = [line for line in lines if any(w in line.lower() for w in ("error", "killed", "oom", "cancelled"))]
    return (hits or lines or ["empty log"])[-1].strip()[:300]


def _in_queue(job_id: str) -> bool:
    """Whether SLURM still holds the job (pending, running, requeued); True when SLURM cannot be asked."""
    try:
        out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return True
    return out.returncode != 0 and "Invalid job id" not in out.stderr or bool(out.stdout.strip())


def _wait(job, poll_s: float = 2.0) -> None:
    """Until the job's result file exists or the job has left the queue (twice in a row, to let files land)."""
    gone = 0
    while not job.paths.result_pickle.exists():
        gone = 0 if _in_queue(job.job_id) else gone + 1
        if gone >= 2:
            return
        time.sleep(poll_s)


class SlurmLauncher(SubmititSlurmLauncher):
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit

        results = submitit.Job.results
        sweep_dir = Path(str(self.config.hydra.sweep.dir))

        def tolerant_results(job):
            _wait(job)
            if job.paths.result_pickle.exists():
                try:
                    return results(job)
                except Exception as exc:  # the job's own error, pickled by submitit
                    error = f"SLURM job {job.job_id} failed ({type(exc).__name__}); {_last_error_line(job)}"
            else:
                error = f"SLURM job {job.job_id} ended without a result; {_last_error_line(job)}"
            task = int(job.job_id.split("_")[1]) if "_" in job.job_id else 0
            mark_failed(sweep_dir, initial_job_idx + task, error)
            return [JobReturn(status=JobStatus.FAILED, _return_value=CellDied(error))]

        submitit.Job.results = tolerant_results  # only for this wait; restored below
        try:
            return super().launch(job_overrides, initial_job_idx)
        finally:
            submitit.Job.results = results
