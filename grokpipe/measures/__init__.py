"""Measures: what each evaluation computes. Each is one file here plus one YAML in conf/measures/.

A measure declares its `columns` (metrics.csv columns, W&B keys, results database metric columns) and its
cadence `every` (in evaluations); it maps an `Evaluation` to one [M] tensor per column, one value per member.
The columns of a run are `epoch`, the enabled measures' columns in config order, and `elapsed`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from grokpipe.schema import Int, Str

SPLITS = ("train", "val")


@dataclass
class Evaluation:
    """What the measures of one evaluation read: every member's outputs and targets on each split, the parts."""

    outputs: dict[str, torch.Tensor]  # split -> [M, N, ...] outputs in float32
    targets: dict[str, torch.Tensor]  # split -> [M, N, ...]
    task: object  # grokpipe.tasks.Task
    loss: object  # grokpipe.losses.Loss
    stack: object  # grokpipe.stack: the members' parameters
    optimizer: object  # grokpipe.optim.StackedOptimizer


class Measure:
    SCHEMA = {"_target_": Str(), "every": Int(1, 10**6)}
    columns: tuple[str, ...] = ()

    def __init__(self, task, every: int = 1) -> None:
        self.task, self.every = task, every

    def __call__(self, ev: Evaluation) -> dict[str, torch.Tensor]:
        raise NotImplementedError


def build_measures(measures_cfg: DictConfig, task) -> list[Measure]:
    """The enabled measures in config order: `measures.<name>._target_` names each one's class."""
    from hydra.utils import get_class

    built = []
    for node in measures_cfg.values():
        kwargs = {k: v for k, v in node.items() if k not in ("_target_",)}
        built.append(get_class(node._target_)(task=task, **kwargs))
    return built


def columns(measures: list[Measure]) -> tuple[str, ...]:
    """metrics.csv's columns for these measures."""
    return ("epoch", *(c for m in measures for c in m.columns), "elapsed")
