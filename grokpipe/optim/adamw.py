"""AdamW (Loshchilov & Hutter): Adam with weight decay decoupled from the gradient. Seed 003's optimiser."""

from __future__ import annotations

import torch

from grokpipe.core.schema import Float, Tuple
from grokpipe.optim import StackedOptimizer

BETAS = Tuple((Float(0, 1, hi_open=True), Float(0, 1, hi_open=True)))
# a normal float32, with room to spare: an eps that rounds to 0 makes the step 0/0 = NaN
EPS = Float(1e-30, 1, hi_open=True)


def adam_update(p, grad, avg, avg_sq, lr, wd, steps, active, betas, eps, decoupled: bool = True) -> None:
    """torch.optim.AdamW's update (Adam's with `decoupled` off) of p [M, n] in place, with its moments avg and
    avg_sq; lr, steps [M, 1] (steps already counting this one), wd [M, 1] or a float, active [M, 1] bool."""
    dt, (beta1, beta2) = p.dtype, betas
    mask = lambda on, off: torch.where(active, on, off).to(dt)
    if decoupled:
        p.mul_((1 - lr * wd).to(dt))
    else:  # Adam: weight decay as L2 in the gradient
        grad = grad.add(p * torch.as_tensor(wd).to(dt))
    avg.lerp_(grad, mask(1 - beta1, 0.0))
    avg_sq.mul_(mask(beta2, 1.0))
    avg_sq.add_(grad * grad * mask(1 - beta2, 0.0))
    step = steps.clamp(min=1)
    step_size = lr / (1 - beta1**step)
    denom = (avg_sq.sqrt() / (1 - beta2**step).sqrt().to(dt)).add_(eps)
    p.sub_(avg / denom * step_size.to(dt))


class AdamW(StackedOptimizer):
    """torch.optim.AdamW's update, member by member (tests/unit check it against torch to 1e-6 in float64)."""

    state_names = ("exp_avg", "exp_avg_sq")
    SCHEMA = {**StackedOptimizer.SCHEMA, "betas": BETAS, "eps": EPS}
    decoupled = True

    def __init__(self, flat: torch.Tensor, members, layout=None) -> None:
        super().__init__(flat, members, layout)
        o = members[0]
        self.beta1, self.beta2, self.eps = float(o.betas[0]), float(o.betas[1]), float(o.eps)

    def update(self, grad: torch.Tensor, lr: torch.Tensor, active: torch.Tensor) -> None:
        avg, avg_sq = self.state["exp_avg"], self.state["exp_avg_sq"]
        betas, p = (self.beta1, self.beta2), self.flat.detach()
        adam_update(p, grad, avg, avg_sq, lr, self.wd, self.steps, active, betas, self.eps, self.decoupled)
