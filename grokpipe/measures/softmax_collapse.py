"""Softmax collapse (Prieto et al. 2025, "Grokking at the edge of numerical stability"), on the training samples.

sc_share         the share whose floating-point softmax of the max-subtracted logits sums to exactly 1: every
                 other class's exp(z_j - z_max) is absorbed, so the gradient of those samples is exactly zero
zero_loss_share  the share whose per-sample cross-entropy is exactly 0 in floating point

Both are computed in the dtype of the evaluation's outputs (float32), as the training step's softmax would be.
"""

from __future__ import annotations

import torch

from grokpipe.measures import Evaluation, Measure


def collapse(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[M] shares of samples of logits [M, N, C] (targets y [M, N]) whose softmax sums to 1 and whose loss is 0."""
    z = logits - logits.amax(-1, keepdim=True)
    total = z.exp().sum(-1)
    loss = total.log() - z.gather(-1, y.unsqueeze(-1)).squeeze(-1)
    return (total == 1).double().mean(1), (loss == 0).double().mean(1)


class SoftmaxCollapse(Measure):
    columns = ("sc_share", "zero_loss_share")

    def applies(self, stack) -> str | None:
        return None if self.task.output == "classes" else f"task {self.task.name} has no class logits"

    def __call__(self, ev: Evaluation) -> dict:
        sc, zero = collapse(ev.outputs["train"], ev.targets["train"])
        return {"sc_share": sc, "zero_loss_share": zero}
