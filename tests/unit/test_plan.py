"""The sweep planner (grokpipe.sweep.plan) without Hydra: one composed config per class of cells that differ only in
seed, every cell's dir, coordinates and split from its class, packs in group_by_shape's order."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from grokpipe.core.errors import ConfigError
from grokpipe.sweep.plan import GridSettings, Plan, group_packs, plan_cells, seed_of


def grid(widths, wds, seeds) -> list[list[str]]:
    return [[f"model.d_model={d}", f"optim.wd={w}", f"train.seed={s}"] for d in widths for w in wds for s in seeds]


class Composer:
    """A stand-in for Hydra's compose: the config the overrides describe, counted."""

    def __init__(self, swept: set[str] = frozenset({"model.d_model", "optim.wd"})) -> None:
        self.calls: list[int] = []
        self.swept = swept

    def __call__(self, overrides: list[str], num: int):
        """What the sweeper's compose gives: the cell's resolved Run, its coordinates (the swept keys but the seed)."""
        self.calls.append(num)
        cfg = OmegaConf.create({"model": {}, "optim": {}, "train": {}, "task": {"split_seed": "${train.seed}"},
                                "hydra": {"sweep": {"subdir": f"custom-{num}"}}})  # fmt: skip
        for text in overrides:
            key, value = text.split("=", 1)
            OmegaConf.update(cfg, key, int(value) if value.lstrip("-").isdigit() else value)
        coords = {k: OmegaConf.select(cfg, k) for k in (o.split("=")[0] for o in overrides) if k in self.swept}
        return SimpleNamespace(cfg=cfg, coords=coords)


def split_of(task) -> str:
    return "seed" if OmegaConf.is_interpolation(task, "split_seed") else "fixed"


def test_cells_that_differ_only_in_seed_share_one_composed_config():
    compose = Composer()
    cells = grid([8, 16], ["0.1", "1"], range(5))
    plan = plan_cells(cells, Path("/s"), compose, "${hydra.job.num}",
                      split_of)  # fmt: skip
    assert compose.calls == [0, 5, 10, 15]  # the first cell of each class
    assert len(plan.configs) == 4 and [c.num for c in plan.cells] == list(range(20))
    assert plan.cells[7].dir == "/s/7" and plan.cells[7].coords == {"model.d_model": 8, "optim.wd": 1}
    assert plan.cells[7].split == "seed" and plan.cells[7].seed == 2 and plan.cells[5].seed is None
    assert plan.configs[1].train.seed == 0  # the class config keeps its first cell's seed; the others are Cell.seed


def test_a_seed_outside_its_domain_or_another_subdir_is_composed_on_its_own():
    compose = Composer()
    cells = [["optim.wd=1", "train.seed=0"], ["optim.wd=1", "train.seed=-3"], ["optim.wd=1", "train.seed=abc"]]
    plan_cells(cells, Path("/s"), compose, "${hydra.job.num}", split_of)
    assert compose.calls == [0, 1, 2]
    assert seed_of(["train.seed=07"])[2] is False  # not the integer's own spelling: Hydra reads it
    compose = Composer()
    plan = plan_cells(grid([8], ["1"], range(3)), Path("/s"), compose, "${hydra.job.override_dirname}",
                      split_of)  # fmt: skip
    assert compose.calls == [0, 1, 2] and plan.cells[2].dir == "/s/custom-2"


def test_packs_follow_group_by_shape_order_and_size():
    compose = Composer()
    plan = plan_cells(grid([8, 16], ["1"], range(3)), Path("/s"), compose,
                      "${hydra.job.num}", split_of)  # fmt: skip
    packs = group_packs(plan, lambda cfg: str(cfg.model.d_model), max_members=2)
    assert packs == [[0, 1], [2], [3, 4], [5]]
    assert group_packs(Plan(plan.cells, plan.configs), lambda cfg: "one", None) == [[0, 1, 2, 3, 4, 5]]


def test_ten_thousand_cells_plan_in_well_under_a_second_a_class():
    compose = Composer()
    cells = grid(range(8, 48, 4), [f"0.{i}" for i in range(1, 11)], range(100))
    start = time.perf_counter()
    plan = plan_cells(cells, Path("/s"), compose, "${hydra.job.num}",
                      split_of)  # fmt: skip
    took = time.perf_counter() - start
    assert len(plan.cells) == 10_000 and len(compose.calls) == 100
    assert took < 10, f"planning 10,000 cells took {took:.1f} s"


def test_grid_settings_refuse_unknown_and_bad_keys():
    with pytest.raises(ConfigError, match=r"^hydra.sweeper.packs is not a setting of this sweeper: "):
        GridSettings.of({"packs": True})
    with pytest.raises(ConfigError, match=r"^hydra.sweeper.max_members=0 is not allowed: an integer >= 1, or null$"):
        GridSettings.of({"max_members": 0})
    assert GridSettings.of({"pack": "auto", "max_members": OmegaConf.create([1])[0]}).max_members == 1
