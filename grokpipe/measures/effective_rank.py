"""Effective rank of the token embedding (Roy & Vetterli 2007): exp of the entropy of its normalised singular
values, between 1 (one direction) and min(vocab_size, d_model) (all directions alike): embed_erank."""

from __future__ import annotations

import torch

from grokpipe.measures import Evaluation, Measure
from grokpipe.measures.fourier import EMBEDDING


def effective_rank(w: torch.Tensor) -> torch.Tensor:
    """[M] effective rank of each matrix of w [M, r, c]."""
    w = w.double()
    finite = w.isfinite().flatten(1).all(1)  # a diverged member has no spectrum: NaN, not an error
    s = torch.linalg.svdvals(torch.where(finite.view(-1, 1, 1), w, 0.0))
    q = s / s.sum(-1, keepdim=True).clamp_min(torch.finfo(s.dtype).tiny)
    entropy = -(q * q.clamp_min(torch.finfo(s.dtype).tiny).log()).sum(-1)
    return torch.where(finite, entropy.exp(), float("nan"))


class EffectiveRank(Measure):
    columns = ("embed_erank",)

    def applies(self, stack) -> str | None:
        if EMBEDDING not in {s.name for s in stack.layout}:
            return f"the model has no token embedding {EMBEDDING}"
        return None

    def __call__(self, ev: Evaluation) -> dict:
        return {"embed_erank": effective_rank(ev.stack.param(EMBEDDING))}
