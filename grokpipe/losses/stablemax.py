"""Stablemax cross-entropy (Prieto et al. 2025, "Grokking at the edge of numerical stability").

s(x) = x + 1 for x >= 0 and 1 / (1 - x) for x < 0 takes the place of exp: class i's probability is
s(x_i) / sum_j s(x_j). s grows linearly, so no logit gap a network reaches rounds the others' share to 0 and the
loss and its gradient to exactly 0 (softmax collapse). The log is taken in float64, as in the paper.
"""

from __future__ import annotations

import torch

from grokpipe.losses import Loss


def stablemax_s(x: torch.Tensor) -> torch.Tensor:
    # each branch sees only its own half-line: 1 / (1 - x) at x = 1 would make the unused branch's gradient 0 * inf
    return torch.where(x >= 0, x.clamp(min=0) + 1, 1 / (1 - x.clamp(max=0)))


def log_stablemax(x: torch.Tensor) -> torch.Tensor:
    """log s(x_i) / sum_j s(x_j) over the last dim, in float64."""
    s = stablemax_s(x.double())
    return s.log() - s.sum(-1, keepdim=True).log()


class StablemaxCrossEntropy(Loss):
    output = "classes"
    name = "stablemax"

    def __call__(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean over samples of -log stablemax(out)[y]: out [M, N, C], y [M, N] -> [M], in out's dtype (at least
        float32)."""
        nll = -log_stablemax(out).gather(-1, y.unsqueeze(-1)).squeeze(-1)
        return nll.mean(1).to(torch.promote_types(out.dtype, torch.float32))
