"""Optimisers written over a stack of members: parameters as one [M, P] tensor, one row per run.

Each optimiser is one file here plus one YAML in conf/optim/ whose `_target_` names its class. The same class
trains a single run (M = 1) and a pack; its state is [M, P] tensors, saved and resumed per member. Per-member
hyperparameters (lr, weight decay, warm-up) are [M, 1] tensors; every other one is shared by the pack.
A member whose `active` flag is off is frozen: parameters and state held, its step count unchanged.

Every optimiser takes three options of the base around its own update, in this order:
- Grokfast (Lee et al. 2024): the gradient plus `lamb` times its EMA;
- ⊥Grad (`orthogonal`, Prieto et al. 2025): per parameter tensor, the gradient's component along the weights
  removed and the rest rescaled to the gradient's norm. It comes after Grokfast, so what the update receives is
  orthogonal to the weights whether or not the filter is on (the filter's EMA holds the raw gradients);
- constant weight norm (`constant_norm`, Omnigrok, Liu et al. 2023): the initial parameters scaled by `alpha` at
  construction, and each member's parameters rescaled to that norm after every step. The norm is optimiser state
  (`target_norm`, [M, 1]), so a resumed run keeps it and its checkpointed parameters are not scaled again.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from grokpipe.core.schema import Bool, Float, Int, Section, Str

PER_MEMBER = ("lr", "wd", "warmup_steps")  # optim keys that may differ between members of a pack


def warmup_lr(lr: torch.Tensor, steps: torch.Tensor, warmup: torch.Tensor) -> torch.Tensor:
    """The lr for the next step after `steps` steps: linear warm-up over `warmup` steps, then constant."""
    return lr * torch.clamp((steps + 1) / (warmup + 1), max=1.0)


class StackedOptimizer:
    """The warm-up schedule, Grokfast, ⊥Grad, the constant weight norm and the per-member bookkeeping.

    A subclass names its state tensors in `state_names` and implements `update(grad, lr, active)`."""

    state_names: tuple[str, ...] = ()
    SCHEMA = {
        "_target_": Str(),
        "name": Str(),
        "lr": Float(0, None, lo_open=True),
        "wd": Float(0, 1e4),
        "warmup_steps": Int(0, 10**9),
        "grokfast": Section({"enabled": Bool(), "alpha": Float(0, 1, hi_open=True), "lamb": Float(0, 1e4)}),
        "orthogonal": Bool(),
        "constant_norm": Section({"enabled": Bool(), "alpha": Float(0, 1e4, lo_open=True)}),
    }

    def __init__(self, flat: torch.Tensor, members: list[DictConfig], layout: list | None = None) -> None:
        """`layout`: the parameter tensors' slots in a row (grokpipe.run.stack.Slot), for updates made per tensor."""
        o, hyper = members[0], dict(dtype=torch.float64, device=flat.device)
        self.flat, self.m = flat, flat.shape[0]
        self.layout = layout if layout is not None else []
        self.base_lr = torch.tensor([float(c.lr) for c in members], **hyper).view(-1, 1)
        self.wd = torch.tensor([float(c.wd) for c in members], **hyper).view(-1, 1)
        self.warmup = torch.tensor([int(c.warmup_steps) for c in members], **hyper).view(-1, 1)
        self.steps = torch.zeros(self.m, 1, **hyper)
        self.grokfast = (float(o.grokfast.alpha), float(o.grokfast.lamb)) if o.grokfast.enabled else None
        names = self.state_names + (("grokfast_ema",) if self.grokfast else ())
        self.state = {n: torch.zeros_like(flat, requires_grad=False) for n in names}
        self.orthogonal = bool(o.orthogonal)
        # each column's parameter tensor, for per-tensor sums; without a layout the row is one tensor
        self.tensor_of = torch.zeros(flat.shape[1], dtype=torch.long, device=flat.device)
        for k, slot in enumerate(self.layout):
            self.tensor_of[slot.start : slot.start + slot.numel] = k
        self.constant_norm = bool(o.constant_norm.enabled)
        if self.constant_norm:
            with torch.no_grad():
                flat.mul_(float(o.constant_norm.alpha))
            self.state["target_norm"] = self.norm()

    def lr(self) -> torch.Tensor:
        """[M, 1]: the lr of each member's next step."""
        return warmup_lr(self.base_lr, self.steps, self.warmup)

    def mask(self, active: torch.Tensor, on, off) -> torch.Tensor:
        """`on` for active members, `off` for frozen ones, as [M, 1] in the parameters' dtype."""
        return torch.where(active, on, off).to(self.flat.dtype)

    def norm(self) -> torch.Tensor:
        """[M, 1] float64: each member's L2 norm over all its parameters."""
        return torch.linalg.vector_norm(self.flat.detach(), dim=1, keepdim=True, dtype=torch.float64)

    def per_tensor_sum(self, x: torch.Tensor) -> torch.Tensor:
        """[M, T]: the sum of x [M, P] over each parameter tensor's columns."""
        n = max(len(self.layout), 1)
        return x.new_zeros(x.shape[0], n).index_add_(1, self.tensor_of, x)

    def orthogonalize(self, grad: torch.Tensor) -> None:
        """⊥Grad in place: per member and tensor, g - (g.w / w.w) w, rescaled to the norm of g. A tensor whose
        weights are all 0 keeps its gradient; a zero gradient stays 0."""
        w, cols = self.flat.detach(), self.tensor_of
        gw, ww, gg = (self.per_tensor_sum(a * b) for a, b in ((grad, w), (w, w), (grad, grad)))
        along = torch.where(ww > 0, gw / ww, 0.0)
        grad.sub_(along[:, cols] * w)
        oo = self.per_tensor_sum(grad * grad)
        grad.mul_(torch.where(oo > 0, (gg / oo).sqrt(), 0.0)[:, cols])

    def renormalize(self, active: torch.Tensor) -> None:
        """Each active member's parameters scaled back to its target norm (a member at norm 0 stays there)."""
        norm, target = self.norm(), self.state["target_norm"]
        scale = torch.where(active & (norm > 0), target / norm, 1.0)
        self.flat.mul_(scale.to(self.flat.dtype))

    @torch.no_grad()
    def step(self, grad: torch.Tensor, active: torch.Tensor) -> None:
        """One step of every active member. Device ops only (no host sync), so a CUDA graph can hold it."""
        if self.grokfast is not None:
            alpha, lamb = self.grokfast
            ema = self.state["grokfast_ema"]
            ema.lerp_(grad, self.mask(active, 1.0 - alpha, 0.0))
            grad.add_(ema, alpha=lamb)
        if self.orthogonal:
            self.orthogonalize(grad)
        lr = torch.where(active, self.lr(), 0.0)
        self.steps.add_(active.to(self.steps.dtype))
        self.update(grad, lr, active)
        if self.constant_norm:
            self.renormalize(active)

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


def build_optimizer(flat: torch.Tensor, members: list[DictConfig], layout: list | None = None) -> StackedOptimizer:
    """The optimiser named by `optim._target_` over the stacked parameters `flat` [M, P] laid out as `layout`."""
    from hydra.utils import get_class

    return get_class(members[0]._target_)(flat, members, layout)
