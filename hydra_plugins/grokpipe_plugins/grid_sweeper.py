"""The grid sweeper: Hydra's basic grid, plus ellipsis ranges, a check of every cell before any launch,
a manifest of the cells (`cells.json` in the sweep dir) that the sweep summary reads, and packing.

With `hydra.sweeper.pack=true` the cells that share a shape (all but seed, lr, wd, warm-up, split seed,
patience) become one job each, trained as one stacked model (`grokpipe.run.train`): an N-cell grid is
launched as one job per distinct shape on whichever launcher is chosen (in-process, local, one SLURM
array). Every cell keeps its own run dir and outputs; the pack jobs' own dirs are `packs/<k>`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf, open_dict

import grokpipe.core.split as split
from grokpipe.core.cells import PACK_DIRS, CellDied, write_cells, write_packs
from grokpipe.core.errors import ConfigError, fail
from grokpipe.sweep.plan import (
    ELLIPSIS,
    GridSettings,
    GridSweeperConf,
    Plan,
    expand_ellipsis,
    fill_slots,
    group_packs,
    plan_cells,
)

__all__ = ["GridSweeper", "expand_ellipsis"]

log = logging.getLogger(__name__)
ConfigStore.instance().store(group="hydra/sweeper", name="grokpipe_grid", node=GridSweeperConf, provider="grokpipe")
SEED_MARK = 8_675_309_123_456_789  # where a class's run config takes each cell's seed


class GridSweeper(BasicSweeper):
    def __init__(self, **settings) -> None:
        try:
            self.settings = self.SETTINGS.of(settings)
        except ConfigError as exc:
            fail(str(exc))
        super().__init__(max_batch_size=self.settings.max_batch_size, params=self.settings.params)
        self.pack, self.max_members = self.settings.pack, self.settings.max_members
        self.caps: dict[str, int] | None = None  # members per pack by shape, where pack=auto decided per shape

    SETTINGS = GridSettings

    def packs(self, cfgs: list) -> bool:
        """Whether these cells train packed: `pack` itself, or for auto where packing pays: on a GPU (the cells name
        train.device=cuda, or leave it at auto with a GPU in reach: SLURM's gpus_per_node for a SLURM cell, else this
        machine's), and on a CPU for the shapes where the measured rule says a pack trains faster per member than
        single runs side by side (grokpipe.config.packing.cpu_pack_members: by model, width and task size; a shape
        where it does not pay is one job per cell; members per pack in `self.caps`, or max_members where set).
        `cfgs`: the composed cells (one per class)."""
        self.caps = None
        if self.pack != "auto":
            return bool(self.pack)
        device, launcher = cfgs[0].train.device, cfgs[0].hydra.launcher
        if device in ("cuda", "cpu", "mps"):
            gpu = device == "cuda"
        elif "gpus_per_node" in launcher:
            gpu = bool(launcher.gpus_per_node)
        else:
            import torch  # only when deciding: the plugin scan must not import torch

            gpu = torch.cuda.is_available()
        if gpu:
            log.info("hydra.sweeper.pack=auto: packed (GPU cells)")
            return True
        from grokpipe.config.packing import cpu_pack_members, shape_text
        from grokpipe.config.validate import task_samples

        members = {
            shape_text(c): (cpu_pack_members(c.model.name, c.model.get("d_model"), task_samples(c)), c) for c in cfgs
        }
        paying = {k: n for k, (n, _) in members.items() if n > 1}
        if device == "mps" or not paying:
            log.info(f"hydra.sweeper.pack=auto: one job per cell: a CPU pack does not pay here ({_span(cfgs)})")
            return False
        self.caps = {k: (self.max_members or paying[k]) if k in paying else 1 for k in members}
        packed = [c for k, (_, c) in members.items() if k in paying]
        alone = [c for k, (_, c) in members.items() if k not in paying]
        rest = f"; one job per cell at {_span(alone)}" if alone else ""
        log.info(
            f"hydra.sweeper.pack=auto: packed at {_span(packed)}, up to {max(self.caps.values())} a pack{rest} "
            '(CPU cells; docs/benchmarks.md, "Where a pack\'s time goes")'
        )
        return True

    def sweep(self, arguments: list[str]):
        try:
            arguments = self.expand(arguments)
            # the preset's grid (hydra.sweeper.params) may use ranges too
            self.params = dict(text.split("=", 1) for text in self.expand(self._parse_config()))
        except ValueError as exc:
            fail(str(exc))
        plan = self.check_cells(arguments)
        try:
            if self.packs(plan.configs):
                return self.sweep_packed(plan)
            return super().sweep(arguments)
        except CellDied as exc:  # raised once every cell has ended: the sweep summary reports each failure
            log.warning(f"a cell died: {exc}")
            return None

    def expand(self, texts: list[str]) -> list[str]:
        """Each override with an ellipsis range rewritten as the explicit list of values."""
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        out = []
        for text, override in zip(texts, parser.parse_overrides(texts)):
            if override.is_discrete_sweep() and ELLIPSIS in (values := list(override.sweep_string_iterator())):
                key = override.get_key_element()
                text = f"{key}={','.join(expand_ellipsis(key, values))}"
            out.append(text)
        return out

    def check_cells(self, arguments: list[str]) -> Plan:
        """Compose and check every cell before anything is launched: one bad cell stops the whole grid. Cells that
        differ only in their seed share one composed config (grokpipe.sweep.plan). Writes the manifest of cells
        (`cells.json`) the sweep summary reads; returns the plan."""
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        parsed = parser.parse_overrides(self._parse_config() + arguments)
        swept = {o.get_key_element() for o in parsed if o.is_sweep_override()}
        (cells,) = self.split_arguments(parsed, None)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        subdir = OmegaConf.to_container(self.config.hydra.sweep, resolve=False)["subdir"]

        def compose(overrides: list[str], num: int):
            where = " ".join(o for o in overrides if o.split("=", 1)[0] in swept)
            return self.compose_cell(overrides, num, f"cell {num} ({where})", swept=swept)

        plan = plan_cells(cells, sweep_dir, compose, str(subdir), split.of_config)
        write_cells(sweep_dir, [c.manifest() for c in plan.cells])
        classes = f" ({len(plan.configs)} composed)" if len(plan.configs) < len(plan.cells) else ""
        log.info(f"{len(plan.cells)} cells checked{classes}; launching")
        return plan

    def compose_cell(self, overrides, num: int, label: str, after: str = "nothing was launched", swept=None):
        """One cell's `Run`: its config composed as job `num`, checked and resolved (read-only from then on), with
        its coordinates when the sweep's `swept` keys are given. If it is not allowed: the line
        `error: <label>: <why>; <after>` on stderr, and exit 2."""
        from grokpipe.config.validate import prepare  # imports torch: here, not when Hydra discovers the plugins

        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(cfg):
            cfg.hydra.job.num = num
        cell = (list(overrides), swept) if swept is not None else None
        try:
            run = prepare(cfg, sweep_dir=str(self.config.hydra.sweep.dir), cell=cell)
        except ConfigError as exc:
            fail(f"{label}: {exc}; {after}")
        return run

    @staticmethod
    def run_config(cfg):
        """A cell's composed config as its run sees it: without `hydra` (`prepare` gave it the sweep's W&B group)."""
        task_cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
        with open_dict(task_cfg):
            del task_cfg["hydra"]
        return task_cfg

    @staticmethod
    def save_run_config(task_cfg, overrides, run_dir: Path) -> None:
        """A packed cell's .hydra/config.yaml and overrides.yaml, which Hydra itself writes for a cell run alone.
        `task_cfg`: the config, or its YAML text."""
        (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
        text = task_cfg if isinstance(task_cfg, str) else OmegaConf.to_yaml(task_cfg)
        (run_dir / ".hydra" / "config.yaml").write_text(text)
        OmegaConf.save(OmegaConf.create(list(overrides)), run_dir / ".hydra" / "overrides.yaml")

    def launch_packs(self, plan: Plan, cells: list, sweep_dir: Path, k0: int = 0) -> None:
        """`cells` (of `plan`) packed by shape and launched, one job per pack, numbered from `k0` (a boundary search's
        later rounds go on from the earlier rounds' packs): each cell's run config to its dir (Hydra writes it for a
        cell run alone), the plan to `packs.json` (after the `k0` packs there), then one launcher batch."""
        from grokpipe.config.packing import shape_text
        from grokpipe.core.cells import read_packs

        packs = group_packs(Plan(cells, plan.configs), shape_text, self.max_members, self.caps)
        slots = getattr(self.launcher, "slots", None)  # a launcher that runs several jobs at a time on this machine
        if callable(slots):
            packs = fill_slots(packs, slots(), lambda pack: sum(_work(plan.configs[cells[i].cls]) for i in pack))
        texts = {}  # per class: its run config as YAML with a marker where the seed goes (one dump a class)
        for cell in cells:
            if cell.cls not in texts:
                task_cfg = self.run_config(plan.configs[cell.cls])
                own = task_cfg.train.seed
                task_cfg.train.seed = SEED_MARK
                text = OmegaConf.to_yaml(task_cfg)
                if text.count(f"seed: {SEED_MARK}\n") != 1:  # the marker must be the seed alone
                    raise RuntimeError(f"cannot place train.seed in the run config of cell {cell.num}")
                texts[cell.cls] = (text, own)
            text, own = texts[cell.cls]
            seed = own if cell.seed is None else cell.seed
            self.save_run_config(
                text.replace(f"seed: {SEED_MARK}\n", f"seed: {seed}\n"), cell.overrides, Path(cell.dir)
            )
        previous = read_packs(sweep_dir)[:k0] if k0 else []
        new = [{"pack": k0 + k, "cells": [cells[i].num for i in m], "dirs": [cells[i].dir for i in m]}
               for k, m in enumerate(packs)]  # fmt: skip
        write_packs(sweep_dir, previous + new)
        log.info(f"Packing {len(cells)} cells into {len(packs)} job{'s' * (len(packs) != 1)} (by shape)")
        for k, members in enumerate(packs):
            log.info(f"\tpack {k0 + k}: cells {', '.join(str(cells[i].num) for i in members)}")
        jobs = [[*cells[m[0]].overrides, f"+pack={k0 + k}", f"hydra.sweep.subdir={PACK_DIRS}/{k0 + k}"]
                for k, m in enumerate(packs)]  # fmt: skip
        for r in self.launcher.launch(jobs, initial_job_idx=k0):
            _ = r.return_value  # raises CellDied for a pack job that died

    def sweep_packed(self, plan: Plan):
        """One job per pack: the job's own overrides name the pack, and its dir is packs/<k>."""
        sweep_dir = Path(self.config.hydra.sweep.dir)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        self.launch_packs(plan, plan.cells, sweep_dir)
        return None

    def validate_batch_is_legal(self, batch) -> None:
        """Every cell was composed and checked in check_cells already."""


def _span(cfgs: list) -> str:
    """The widths of these cells, as text: `d_model 8 to 32` (task sizes too where they differ)."""
    from grokpipe.config.validate import task_size

    widths = sorted({c.model.get("d_model") for c in cfgs if c.model.get("d_model") is not None})
    sizes = sorted({task_size(c) for c in cfgs})
    text = "" if not widths else f"d_model {widths[0]}" + (f" to {widths[-1]}" if len(widths) > 1 else "")
    return text + (f" (task size {', '.join(map(str, sizes))})" if len(sizes) > 1 else f" (p={sizes[0]})")


def _work(cfg) -> float:
    """A cell's expected work, to order pack jobs: its budget times a member's work per epoch."""
    from grokpipe.config.validate import budget, pack_work, task_samples

    return budget(cfg.train)[0] * pack_work(task_samples(cfg), cfg.model.get("d_model") or 1)
