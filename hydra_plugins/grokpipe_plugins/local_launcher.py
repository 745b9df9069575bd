"""`hydra/launcher=local`: the cells of a sweep in parallel on this machine, one process per core.

Each cell runs in a forked worker with torch's thread count set so workers x threads = cores (two
one-thread processes beat one two-thread process for these small models). A worker that dies (killed,
out of memory) is reported as a failed cell; the other cells go on. While it waits, one status line
(`grokpipe.sweep.status`) says how many cells are done, running, pending and failed.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
from collections.abc import Sequence
from multiprocessing.connection import wait
from pathlib import Path

from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from omegaconf import open_dict

from grokpipe.core.cells import CellDied, mark_failed
from grokpipe.sweep.status import ENDED, PENDING, RUNNING, SweepStatus

log = logging.getLogger(__name__)
POLL_S = 1.0  # how often the status line is refreshed while every worker is busy


class LocalLauncher(Launcher):
    def __init__(
        self, n_jobs: int | None = None, threads_per_job: int | None = None, status_every_s: float = 60
    ) -> None:
        self.n_jobs, self.threads_per_job, self.status_every_s = n_jobs, threads_per_job, status_every_s

    def slots(self) -> int:
        """How many jobs run at a time when there are enough: n_jobs, or one per core."""
        return max(1, self.n_jobs or os.cpu_count() or 1)

    def setup(self, *, hydra_context, task_function, config) -> None:
        self.hydra_context, self.task_function, self.config = hydra_context, task_function, config

    def _run_cell(self, num: int, overrides: Sequence[str], threads: int, conn) -> None:
        import torch

        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(cfg):
            cfg.hydra.job.id = f"{cfg.hydra.job.name}_{num}"
            cfg.hydra.job.num = num
        ret = run_job(
            hydra_context=self.hydra_context,
            task_function=self.task_function,
            config=cfg,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )
        try:
            conn.send(ret)
        except Exception as exc:  # an unpicklable return value: report the status at least
            conn.send(JobReturn(status=JobStatus.FAILED, _return_value=RuntimeError(repr(exc))))
        conn.close()

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(self.config.hydra.sweep.dir).mkdir(parents=True, exist_ok=True)
        cores = os.cpu_count() or 1
        n_jobs = max(1, min(self.slots(), len(job_overrides)))
        threads = self.threads_per_job or max(1, cores // n_jobs)
        log.info(f"Launching {len(job_overrides)} jobs locally: {n_jobs} at a time, {threads} torch thread(s) each")

        ctx = multiprocessing.get_context("fork")
        sweep_dir = Path(self.config.hydra.sweep.dir)
        pending = list(enumerate(job_overrides, start=initial_job_idx))
        running: dict[int, tuple] = {}  # sentinel -> (num, process, receiving end)
        results: dict[int, JobReturn] = {}
        status = SweepStatus(sweep_dir, [num for num, _ in pending], self.status_every_s)
        while pending or running:
            while pending and len(running) < n_jobs:
                num, overrides = pending.pop(0)
                log.info(f"\t#{num} : {' '.join(filter_overrides(overrides))}")
                recv, send = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=self._run_cell, args=(num, overrides, threads, send), daemon=False)
                proc.start()
                send.close()
                running[proc.sentinel] = (num, proc, recv)
            status.update(_states(pending, running, results))
            for sentinel in wait(list(running), timeout=POLL_S):
                num, proc, recv = running.pop(sentinel)
                try:
                    ret = recv.recv() if recv.poll() else None
                except EOFError:  # the worker died: its end of the pipe closed with nothing sent
                    ret = None
                proc.join()
                if ret is None:
                    code = proc.exitcode
                    how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
                    error = f"worker process {how} without a result (out of memory or killed?)"
                    mark_failed(sweep_dir, num, error)
                    ret = JobReturn(status=JobStatus.FAILED, _return_value=CellDied(error))
                results[num] = ret
        status.update(_states(pending, running, results))
        status.close()
        return [results[num] for num in sorted(results)]


def _states(pending: list, running: dict, results: dict) -> dict[int, str]:
    """Each job's state for the status line."""
    return {
        **{num: PENDING for num, _ in pending},
        **{num: RUNNING for num, _, _ in running.values()},
        **dict.fromkeys(results, ENDED),
    }
