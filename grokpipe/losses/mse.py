"""Mean squared error of real outputs: the loss of the regression tasks (seed 004's nn.MSELoss)."""

from __future__ import annotations

import torch

from grokpipe.losses import Loss


class MSE(Loss):
    output = "real"
    name = "mse"

    def __call__(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean over samples and positions of (out - y)^2: out, y [M, N, ...] -> [M]."""
        return (out - y).square().flatten(1).mean(1)
