"""`hydra/launcher=packed`: a sweep's cells that share a shape train as one stacked model, in this process.

Cells that differ only in seed, lr, weight decay, warm-up, split seed or patience form one pack
(`grokpipe.packed.group_by_shape`), so an N-cell grid becomes one training per distinct shape. Every cell
still gets its own run dir with `.hydra/config.yaml`, metrics.csv, summary.json, checkpoints and W&B run.
A pack that fails marks each of its cells failed with the error; the other packs go on.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from pathlib import Path

from hydra.core.utils import JobReturn, JobStatus, configure_log, setup_globals
from hydra.plugins.launcher import Launcher
from omegaconf import OmegaConf, open_dict

from grokpipe.cli import sweep_group
from grokpipe.sweep_summary import CellDied, mark_failed

log = logging.getLogger(__name__)


class PackedLauncher(Launcher):
    def __init__(self, max_members: int | None = None) -> None:
        self.max_members = max_members

    def setup(self, *, hydra_context, task_function, config) -> None:
        self.hydra_context, self.config = hydra_context, config

    def _cell(self, num: int, overrides: Sequence[str]):
        """The cell's composed config (with hydra), its task config and its run dir, as run_job would make them."""
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(cfg):
            cfg.hydra.job.num = num
            cfg.hydra.job.id = f"{cfg.hydra.job.name}_{num}"
        task_cfg = copy.deepcopy(cfg)
        with open_dict(task_cfg):
            del task_cfg["hydra"]
            if task_cfg.logger.get("group") is None:
                task_cfg.logger.group = sweep_group(str(cfg.hydra.sweep.dir))
        run_dir = Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)
        (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
        OmegaConf.save(task_cfg, run_dir / ".hydra" / "config.yaml")
        OmegaConf.save(OmegaConf.create(list(overrides)), run_dir / ".hydra" / "overrides.yaml")
        return cfg, task_cfg, run_dir

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from grokpipe.packed import group_by_shape, train_packed

        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        cells = [self._cell(initial_job_idx + i, o) for i, o in enumerate(job_overrides)]
        groups = group_by_shape([task_cfg for _, task_cfg, _ in cells], self.max_members)
        log.info(f"Packing {len(cells)} cells into {len(groups)} trainings (one per shape)")
        returns: dict[int, JobReturn] = {}
        for members in groups:
            log.info(f"\tpack of cells {', '.join(str(initial_job_idx + i) for i in members)}")
            try:
                summaries = train_packed([cells[i][1] for i in members], [cells[i][2] for i in members])
            except Exception as exc:  # this pack fails; the other packs go on
                error = f"{type(exc).__name__}: {exc}"
                for i in members:
                    mark_failed(sweep_dir, initial_job_idx + i, error)
                    returns[i] = JobReturn(status=JobStatus.FAILED, _return_value=CellDied(error))
                continue
            for i, summary in zip(members, summaries):
                cfg, task_cfg, run_dir = cells[i]
                returns[i] = JobReturn(
                    overrides=list(job_overrides[i]),
                    cfg=task_cfg,
                    hydra_cfg=cfg,
                    working_dir=str(run_dir),
                    task_name=cfg.hydra.job.name,
                    status=JobStatus.COMPLETED,
                    _return_value=summary.get("grok_epoch"),
                )
        return [returns[i] for i in range(len(cells))]
