"""Measures: what each evaluation computes. Each is one file here plus one YAML in conf/measures/.

A measure declares its `columns` (metrics.csv columns, W&B keys, results database metric columns) and its
cadence `every` (in evaluations); it maps an `Evaluation` to one [M] tensor per column, one value per member.
The columns of a run are `epoch`, the enabled measures' columns in config order, and `elapsed`. A measure
defined only for some tasks or models says why in `applies`; the run then goes on without it (one line at start).
Its `thresholds` ({column: {above: v} or {below: v}}) give the first epoch each column crosses v from the other
side: summary.json's `crossed`, and `hidden_progress` = grok epoch - that epoch (how long the measure moved
before val accuracy did); the results database's `crossings` table holds both.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from grokpipe.core.errors import ConfigError
from grokpipe.core.schema import Int, Mapping, Nullable, Str

SPLITS = ("train", "val")


@dataclass
class Evaluation:
    """What the measures of one evaluation read: every member's outputs and targets on each split, the parts."""

    outputs: dict[str, torch.Tensor]  # split -> [M, N, ...] outputs in float32
    targets: dict[str, torch.Tensor]  # split -> [M, N, ...]
    inputs: dict[str, torch.Tensor]  # split -> [M, N, seq_len] token sequences
    task: object  # grokpipe.tasks.Task
    loss: object  # grokpipe.losses.Loss
    stack: object  # grokpipe.run.stack: the members' parameters
    optimizer: object  # grokpipe.optim.StackedOptimizer


class Measure:
    SCHEMA = {"_target_": Str(), "every": Int(1, 10**6), "thresholds": Nullable(Mapping())}
    columns: tuple[str, ...] = ()

    def __init__(self, task, every: int = 1, thresholds=None, name: str = "") -> None:
        self.task, self.every, self.name = task, every, name or type(self).__name__
        self.thresholds = dict(thresholds or {})

    def applies(self, stack) -> str | None:
        """None if this measure is defined for the run's task and model, else why not (one line)."""
        return None

    def __call__(self, ev: Evaluation) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def check_thresholds(self) -> None:
        for col, rule in self.thresholds.items():
            if col not in self.columns:
                raise ConfigError(
                    f"measures.{self.name}.thresholds.{col} is not allowed: one of {', '.join(self.columns)}"
                )
            ok = isinstance(rule, dict) and len(rule) == 1 and next(iter(rule)) in ("above", "below")
            value = next(iter(rule.values())) if ok else None
            if not ok or isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
                raise ConfigError(
                    f"measures.{self.name}.thresholds.{col}={rule!r} is not allowed: {{above: <number>}} or "
                    "{below: <number>}"
                )


def build_measures(measures_cfg: DictConfig, task) -> list[Measure]:
    """The enabled measures in config order: `measures.<name>._target_` names each one's class."""
    from hydra.utils import get_class
    from omegaconf import OmegaConf

    built = []
    for name, node in measures_cfg.items():
        kwargs = {k: v for k, v in OmegaConf.to_container(node, resolve=True).items() if k != "_target_"}
        measure = get_class(node._target_)(task=task, name=name, **kwargs)
        measure.check_thresholds()
        built.append(measure)
    return built


def first_crossings(measures: list[Measure], rows: list[dict]) -> dict[str, int | None]:
    """For each threshold of the measures: the first epoch at which the column crosses it, coming from the other
    side (a column that starts past its threshold has not crossed it yet); None if it never did."""
    out = {}
    for m in measures:
        for col, rule in m.thresholds.items():
            (side, value), crossed, before = next(iter(rule.items())), None, False
            for r in rows:
                v = r.get(col)
                if v is None or v != v:
                    continue
                past = v >= value if side == "above" else v <= value
                if past and before:
                    crossed = r["epoch"]
                    break
                before = before or not past
            out[col] = crossed
    return out


def columns(measures: list[Measure]) -> tuple[str, ...]:
    """metrics.csv's columns for these measures."""
    return ("epoch", *(c for m in measures for c in m.columns), "elapsed")
