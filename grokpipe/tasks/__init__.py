"""Tasks: the data a run learns, its input spec, its output kind, its metrics and its generalisation criterion.

Each task is one file here plus one YAML in conf/task/ whose `_target_` names its class. A task is built once per
run from its config node (`build_task(cfg.task)`); everything downstream reads the task, never `task.op` or `task.p`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from grokpipe.core.schema import Float, Int, Str, refuse


@dataclass(frozen=True)
class TaskSpec:
    """What a model needs to know of its inputs and outputs."""

    vocab_size: int  # tokens 0..vocab_size-1
    seq_len: int  # tokens per sample
    n_outputs: int  # classes (output "classes") or values per sample (output "real")
    output: str = "classes"
    query_token: bool = False  # the last position is a query token ('=') that carries no operand


@dataclass
class Split:
    """Inputs [N, seq_len] and targets of the train and val samples."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor

    def to(self, device: torch.device | str) -> Split:
        return Split(*(t.to(device) for t in (self.train_x, self.train_y, self.val_x, self.val_y)))


class Task:
    """Base of every task. A subclass sets `spec`, `size` and `name` and implements `samples()`."""

    spec: TaskSpec
    size: int  # the size the width ratio d_model / size is taken against (p, or the group order)
    name: str
    # criterion: metric column -> (comparison, threshold); memorised/generalised when every entry holds
    memorize: dict[str, tuple[str, float]]
    generalize: dict[str, tuple[str, float]]
    # for the Fourier measures: tokens 0..residues-1 are the elements of Z_residues (None: no such tokens), and
    # the label is (a + sign * b) mod residues for sign = linear_sign (None: not such a task)
    residues: int | None = None
    linear_sign: int | None = None

    SCHEMA = {
        "_target_": Str(),
        "name": Str(),
        "train_frac": Float(0, 1, lo_open=True, hi_open=True),
        "split_seed": Int(0, 2**63 - 1),
        "generalize_at": Float(0, 1),
        "memorize_at": Float(0, 1),
    }
    output = "classes"  # the kind of target: "classes" or "real" (a loss states which it fits)

    @classmethod
    def size_of(cls, node) -> int:
        """The task's size for the width ratio, from its config node (without building the data)."""
        raise NotImplementedError

    @classmethod
    def n_samples_of(cls, node) -> int:
        raise NotImplementedError

    @classmethod
    def check(cls, node) -> None:
        """Checks across keys, after each key passed its SCHEMA domain."""
        n = cls.n_samples_of(node)
        if not 1 <= round(node.train_frac * n) < n:
            refuse(
                "task.train_frac", node.train_frac, f"must leave at least one sample in train and in val ({n} samples)"
            )

    def __init__(self, train_frac: float, split_seed: int) -> None:
        self.train_frac, self.split_seed = train_frac, split_seed

    def samples(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every sample of the task: inputs [N, seq_len] and targets [N]."""
        raise NotImplementedError

    def split(self) -> Split:
        """All samples, shuffled by `split_seed` and cut at `train_frac`: disjoint, complete, deterministic."""
        x, y = self.samples()
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(self.split_seed))
        n_train = int(round(self.train_frac * len(y)))
        tr, va = order[:n_train], order[n_train:]
        return Split(x[tr], y[tr], x[va], y[va])

    metric_names: tuple[str, ...] = ("acc",)  # what metrics() returns, per split

    def metrics(self, out: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """The task's own metrics per member: outputs [M, N, ...], targets [M, N, ...] -> name -> [M]."""
        return {"acc": (out.argmax(-1) == y).float().mean(1)}

    def criterion(self, row: dict[str, torch.Tensor], which: str) -> torch.Tensor:
        """Per member [M] bool: has the run memorised (`which="memorize"`) or generalised at this evaluation."""
        ok = None
        for column, (cmp, threshold) in getattr(self, which).items():
            value = row[column]
            hit = value >= threshold if cmp == ">=" else value <= threshold
            ok = hit if ok is None else ok & hit
        return ok

    def criterion_text(self) -> str:
        """The generalisation and memorisation criteria in words (summary.json and the docs)."""

        def words(rule: dict) -> str:
            return " and ".join(f"{c} {cmp} {t:g}" for c, (cmp, t) in rule.items())

        return f"generalised: {words(self.generalize)}; memorised: {words(self.memorize)}"


def build_task(task_cfg: DictConfig) -> Task:
    """The task named by `task._target_`, from its config node."""
    from hydra.utils import get_class

    cls = get_class(task_cfg._target_)
    return cls(**{k: v for k, v in task_cfg.items() if k not in ("_target_", "name")})
