"""The grid sweeper: Hydra's basic grid, plus ellipsis ranges, a check of every cell before any launch,
a manifest of the cells (`cells.json` in the sweep dir) that the sweep summary reads, and packing.

With `hydra.sweeper.pack=true` the cells that share a shape (all but seed, lr, wd, warm-up, split seed,
patience) become one job each, trained as one stacked model (`grokpipe.run.train`): an N-cell grid is
launched as one job per distinct shape on whichever launcher is chosen (in-process, local, one SLURM
array). Every cell keeps its own run dir and outputs; the pack jobs' own dirs are `packs/<k>`.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf, open_dict

import grokpipe.core.split as split
from grokpipe.core.cells import PACK_DIRS, CellDied, coordinates, sweep_group, write_cells, write_packs
from grokpipe.core.errors import ConfigError, fail

log = logging.getLogger(__name__)
ELLIPSIS = "..."


def _fmt(x: float, integral: bool) -> str:
    return str(int(round(x))) if integral else f"{float(f'{x:.12g}')!r}"


def expand_ellipsis(key: str, values: list[str]) -> list[str]:
    """`8,16,...,256` -> the progression the leading terms imply, up to and including the last term.

    Two or more leading terms and one final term. Geometric when the terms share a ratio, arithmetic when
    they share a step; with two leading terms that fit both (8,16,...,256), geometric: widths and weight
    decays are swept in powers. Raises ValueError naming the key when no progression reaches the end.
    """
    if ELLIPSIS not in values:
        return values
    where = values.index(ELLIPSIS)
    head, tail = values[:where], values[where + 1 :]
    spec = ",".join(values)
    if len(head) < 2 or len(tail) != 1:
        raise ValueError(f"{key}={spec}: write at least two terms before '...' and exactly one after it")
    try:
        terms, end = [float(v) for v in head], float(tail[0])
    except ValueError:
        raise ValueError(f"{key}={spec}: a range with '...' needs numbers") from None
    integral = all(float(v).is_integer() and "." not in v for v in [*head, tail[0]])

    def walk(nxt) -> list[float] | None:
        seq = list(terms)
        while len(seq) < 10_000:
            if math.isclose(seq[-1], end, rel_tol=1e-9, abs_tol=1e-12):
                return seq
            if (end - seq[-1]) * (seq[-1] - seq[0]) < 0 or abs(seq[-1] - seq[0]) > abs(end - seq[0]) * (1 + 1e-9):
                return None
            seq.append(nxt(seq[-1]))
        return None

    candidates = []
    if all(t != 0 for t in terms):
        ratio = terms[1] / terms[0]
        if ratio > 0 and ratio != 1 and all(math.isclose(b / a, ratio) for a, b in zip(terms, terms[1:])):
            candidates.append(("geometric", walk(lambda x: x * ratio)))
    step = terms[1] - terms[0]
    if step != 0 and all(math.isclose(b - a, step, abs_tol=1e-12) for a, b in zip(terms, terms[1:])):
        candidates.append(("arithmetic", walk(lambda x: x + step)))
    for kind, seq in candidates:
        if seq is not None:
            log.info(f"{key}: {spec} read as the {kind} progression {len(seq)} terms long")
            return [_fmt(x, integral) for x in seq]
    raise ValueError(f"{key}={spec}: no arithmetic or geometric progression from {','.join(head)} reaches {tail[0]}")


PACK_CHOICES = (True, False, "auto")
PACK_CPU_MAX_WIDTH = 16  # pack=auto packs CPU cells up to this d_model (measured: docs/benchmarks.md)


class GridSweeper(BasicSweeper):
    def __init__(self, max_batch_size: int | None = None, params=None, pack=False, max_members=None) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        if pack not in PACK_CHOICES:
            fail(f"hydra.sweeper.pack={pack} is not allowed: true, false or auto")
        self.pack, self.max_members = pack, max_members

    def packs(self, cfgs: list) -> bool:
        """Whether these cells train packed: `pack` itself, or for auto where packing pays: on a GPU (the cells name
        train.device=cuda, or leave it at auto with a GPU in reach: SLURM's gpus_per_node for a SLURM cell, else this
        machine's), and on a CPU when every cell is of the narrowest models (d_model <= PACK_CPU_MAX_WIDTH: there a
        pack of 8 trained 1.57x (d_model 8) and 1.17x (16) faster per member than single runs; at 32 it was 0.98x,
        so a grid that mixes in wider models is not packed; docs/benchmarks.md). `cfgs`: the composed cells."""
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
        widths = [c.model.get("d_model") or PACK_CPU_MAX_WIDTH + 1 for c in cfgs]
        packed = gpu or (device != "mps" and max(widths) <= PACK_CPU_MAX_WIDTH)
        why = "GPU cells" if gpu else f"CPU cells of d_model up to {max(widths)}"
        log.info(f"hydra.sweeper.pack=auto: {'packed' if packed else 'one job per cell'} ({why})")
        return packed

    def sweep(self, arguments: list[str]):
        try:
            arguments = self.expand(arguments)
            # the preset's grid (hydra.sweeper.params) may use ranges too
            self.params = dict(text.split("=", 1) for text in self.expand(self._parse_config()))
        except ValueError as exc:
            fail(str(exc))
        cells = self.check_cells(arguments)
        try:
            if self.packs([cfg for _, cfg in cells]):
                return self.sweep_packed(cells)
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

    def check_cells(self, arguments: list[str]) -> list[tuple]:
        """Compose and check every cell before anything is launched: one bad cell stops the whole grid.
        Writes the manifest of cells (`cells.json`) the sweep summary reads; returns (overrides, config) per cell."""
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        parsed = parser.parse_overrides(self._parse_config() + arguments)
        swept = {o.get_key_element() for o in parsed if o.is_sweep_override()}
        (cells,) = self.split_arguments(parsed, None)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        manifest, composed = [], []
        for num, overrides in enumerate(cells):
            where = " ".join(o for o in overrides if o.split("=", 1)[0] in swept)
            cfg = self.compose_cell(overrides, num, f"cell {num} ({where})")
            entry = {"num": num, "overrides": list(overrides), "dir": str(sweep_dir / cfg.hydra.sweep.subdir)}
            manifest.append({**entry, "coords": coordinates(overrides, swept, cfg), "split": split.of_config(cfg.task)})
            composed.append((list(overrides), cfg))
        write_cells(sweep_dir, manifest)
        log.info(f"{len(cells)} cells checked; launching")
        return composed

    def compose_cell(self, overrides, num: int, label: str, after: str = "nothing was launched"):
        """One cell's config, composed as job `num` and checked. If it is not allowed: the line
        `error: <label>: <why>; <after>` on stderr, and exit 2."""
        from grokpipe.config.validate import prepare  # imports torch: here, not when Hydra discovers the plugins

        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(cfg):
            cfg.hydra.job.num = num
        try:
            prepare(cfg)
        except ConfigError as exc:
            fail(f"{label}: {exc}; {after}")
        return cfg

    @staticmethod
    def run_config(cfg, sweep_dir: Path):
        """A cell's composed config as its run sees it: without `hydra`, logged to the sweep's group by default."""
        task_cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
        with open_dict(task_cfg):
            del task_cfg["hydra"]
            if task_cfg.logger.get("group") is None:
                task_cfg.logger.group = sweep_group(str(sweep_dir))
        return task_cfg

    @staticmethod
    def save_run_config(task_cfg, overrides, run_dir: Path) -> None:
        """A packed cell's .hydra/config.yaml and overrides.yaml, which Hydra itself writes for a cell run alone."""
        (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
        OmegaConf.save(task_cfg, run_dir / ".hydra" / "config.yaml")
        OmegaConf.save(OmegaConf.create(list(overrides)), run_dir / ".hydra" / "overrides.yaml")

    def plan_packs(self, cells: list[tuple]) -> list[list[int]]:
        """Group the cells by shape, write each cell's run config to its dir and the plan to `packs.json`."""
        from grokpipe.config.packing import check_packable, group_by_shape

        sweep_dir = Path(self.config.hydra.sweep.dir)
        task_cfgs, dirs = [], []
        for _, cfg in cells:
            task_cfgs.append(self.run_config(cfg, sweep_dir))
            dirs.append(sweep_dir / str(cfg.hydra.sweep.subdir))
        packs = group_by_shape(task_cfgs, self.max_members)
        for members in packs:
            try:
                check_packable([task_cfgs[i] for i in members])
            except ConfigError as exc:
                fail(f"cells {','.join(map(str, members))}: {exc}; nothing was launched")
        for (overrides, _), task_cfg, run_dir in zip(cells, task_cfgs, dirs):
            self.save_run_config(task_cfg, overrides, run_dir)
        plan = [
            {"pack": k, "cells": members, "dirs": [str(dirs[i]) for i in members]} for k, members in enumerate(packs)
        ]
        write_packs(sweep_dir, plan)
        return packs

    def sweep_packed(self, cells: list[tuple]):
        """One job per pack: the job's own overrides name the pack, and its dir is packs/<k>."""
        packs = self.plan_packs(cells)
        log.info(f"Packing {len(cells)} cells into {len(packs)} job{'s' * (len(packs) != 1)} (one per shape)")
        for k, members in enumerate(packs):
            log.info(f"\tpack {k}: cells {', '.join(map(str, members))}")
        sweep_dir = Path(self.config.hydra.sweep.dir)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        first = [cells[members[0]][0] for members in packs]
        jobs = [[*o, f"+pack={k}", f"hydra.sweep.subdir={PACK_DIRS}/{k}"] for k, o in enumerate(first)]
        results = self.launcher.launch(jobs, initial_job_idx=0)
        for r in results:
            _ = r.return_value  # raises CellDied for a pack job that died
        return [results]

    def validate_batch_is_legal(self, batch) -> None:
        """Every cell was composed and checked in check_cells already."""
