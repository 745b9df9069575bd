"""Optimisers written over a stack of members: parameters as one [M, P] tensor, one row per run.

Each optimiser is one file here plus one YAML in conf/optim/ whose `_target_` names its class. The same class
trains a single run (M = 1) and a pack; its state is [M, P] tensors, saved and resumed per member. Per-member
hyperparameters (lr, weight decay, warm-up) are [M, 1] tensors; every other one is shared by the pack.
A member whose `active` flag is off is frozen: parameters and state held, its step count unchanged.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from grokpipe.schema import Bool, Float, Int, Section, Str

PER_MEMBER = ("lr", "wd", "warmup_steps")  # optim keys that may differ between members of a pack


def warmup_lr(lr: torch.Tensor, steps: torch.Tensor, warmup: torch.Tensor) -> torch.Tensor:
    """The lr for the next step after `steps` steps: linear warm-up over `warmup` steps, then constant."""
    return lr * torch.clamp((steps + 1) / (warmup + 1), max=1.0)


class StackedOptimizer:
    """The warm-up schedule, the optional Grokfast filter (Lee et al., 2024) and the per-member bookkeeping.

    A subclass names its state tensors in `state_names` and implements `update(grad, lr, active)`."""

    state_names: tuple[str, ...] = ()
    SCHEMA = {
        "_target_": Str(),
        "name": Str(),
        "lr": Float(0, None, lo_open=True),
        "wd": Float(0, 1e4),
        "warmup_steps": Int(0, 10**9),
        "grokfast": Section({"enabled": Bool(), "alpha": Float(0, 1, hi_open=True), "lamb": Float(0, 1e4)}),
    }

    def __init__(self, flat: torch.Tensor, members: list[DictConfig]) -> None:
        o, hyper = members[0], dict(dtype=torch.float64, device=flat.device)
        self.flat, self.m = flat, flat.shape[0]
        self.base_lr = torch.tensor([float(c.lr) for c in members], **hyper).view(-1, 1)
        self.wd = torch.tensor([float(c.wd) for c in members], **hyper).view(-1, 1)
        self.warmup = torch.tensor([int(c.warmup_steps) for c in members], **hyper).view(-1, 1)
        self.steps = torch.zeros(self.m, 1, **hyper)
        self.grokfast = (float(o.grokfast.alpha), float(o.grokfast.lamb)) if o.grokfast.enabled else None
        names = self.state_names + (("grokfast_ema",) if self.grokfast else ())
        self.state = {n: torch.zeros_like(flat, requires_grad=False) for n in names}

    def lr(self) -> torch.Tensor:
        """[M, 1]: the lr of each member's next step."""
        return warmup_lr(self.base_lr, self.steps, self.warmup)

    def mask(self, active: torch.Tensor, on, off) -> torch.Tensor:
        """`on` for active members, `off` for frozen ones, as [M, 1] in the parameters' dtype."""
        return torch.where(active, on, off).to(self.flat.dtype)

    @torch.no_grad()
    def step(self, grad: torch.Tensor, active: torch.Tensor) -> None:
        """One step of every active member. Device ops only (no host sync), so a CUDA graph can hold it."""
        if self.grokfast is not None:
            alpha, lamb = self.grokfast
            ema = self.state["grokfast_ema"]
            ema.lerp_(grad, self.mask(active, 1.0 - alpha, 0.0))
            grad.add_(ema, alpha=lamb)
        lr = torch.where(active, self.lr(), 0.0)
        self.steps.add_(active.to(self.steps.dtype))
        self.update(grad, lr, active)

    def update(self, grad: torch.Tensor, lr: torch.Tensor, active: torch.Tensor) -> None:
        raise NotImplementedError

    def member_state(self, i: int) -> dict:
        """Member i's state: its step count and each state tensor's row, for its checkpoint."""
        return {"steps": int(self.steps[i].item()), **{n: t[i].clone() for n, t in self.state.items()}}

    def load_member(self, i: int, state: dict) -> None:
        with torch.no_grad():
            self.steps[i] = float(state["steps"])
            for n, t in self.state.items():
                if n not in state:
                    raise KeyError(f"optimizer state {n!r}")
                t[i] = state[n].to(t)


def build_optimizer(flat: torch.Tensor, members: list[DictConfig]) -> StackedOptimizer:
    """The optimiser named by `optim._target_` over the stacked parameters `flat` [M, P]."""
    from hydra.utils import get_class

    return get_class(members[0]._target_)(flat, members)
