"""AdamW (Loshchilov & Hutter): Adam with weight decay decoupled from the gradient. Seed 003's optimiser."""

from __future__ import annotations

import torch

from grokpipe.optim import StackedOptimizer
from grokpipe.schema import Float, Tuple


class AdamW(StackedOptimizer):
    """torch.optim.AdamW's update, member by member (tests/unit check it against torch to 1e-6 in float64)."""

    state_names = ("exp_avg", "exp_avg_sq")
    SCHEMA = {
        **StackedOptimizer.SCHEMA,
        "betas": Tuple((Float(0, 1, hi_open=True), Float(0, 1, hi_open=True))),
        "eps": Float(0, 1, lo_open=True),
    }
    decoupled = True

    def __init__(self, flat: torch.Tensor, members) -> None:
        super().__init__(flat, members)
        o = members[0]
        self.beta1, self.beta2, self.eps = float(o.betas[0]), float(o.betas[1]), float(o.eps)

    def update(self, grad: torch.Tensor, lr: torch.Tensor, active: torch.Tensor) -> None:
        p, dt = self.flat, self.flat.dtype
        avg, avg_sq = self.state["exp_avg"], self.state["exp_avg_sq"]
        if self.decoupled:
            p.mul_((1 - lr * self.wd).to(dt))
        else:  # Adam: weight decay as L2 in the gradient
            grad = grad.add(p.detach() * self.wd.to(dt))
        avg.lerp_(grad, self.mask(active, 1 - self.beta1, 0.0))
        avg_sq.mul_(self.mask(active, self.beta2, 1.0))
        avg_sq.add_(grad * grad * self.mask(active, 1 - self.beta2, 0.0))
        step = self.steps.clamp(min=1)
        step_size = lr / (1 - self.beta1**step)
        denom = (avg_sq.sqrt() / (1 - self.beta2**step).sqrt().to(dt)).add_(self.eps)
        p.sub_(avg / denom * step_size.to(dt))
