"""SGD with momentum (no dampening, not Nesterov), weight decay as L2 in the gradient, as torch.optim.SGD."""

from __future__ import annotations

import torch

from grokpipe.core.schema import Float
from grokpipe.optim import StackedOptimizer


class SGD(StackedOptimizer):
    state_names = ("momentum_buffer",)
    SCHEMA = {**StackedOptimizer.SCHEMA, "momentum": Float(0, 1, hi_open=True)}

    def __init__(self, flat: torch.Tensor, members, layout=None) -> None:
        super().__init__(flat, members, layout)
        self.momentum = float(members[0].momentum)

    def update(self, grad: torch.Tensor, lr: torch.Tensor, active: torch.Tensor) -> None:
        p, dt = self.flat, self.flat.dtype
        d_p = grad.add(p.detach() * self.wd.to(dt))
        if self.momentum:
            buf = self.state["momentum_buffer"]  # zero before the first step, so the first step's buffer is d_p
            buf.mul_(self.mask(active, self.momentum, 1.0)).add_(d_p * active.to(dt))
            d_p = buf
        p.sub_(d_p * lr.to(dt))
