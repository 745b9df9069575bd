"""Restricted and excluded loss (Nanda et al. 2023, "Progress measures for grokking via mechanistic
interpretability"), for labels (a + b) mod p or (a - b) mod p.

The logits on every pair (a, b) form a [p, p, C] grid. Its 2-D Fourier transform over (a, b) holds, for frequency
w, the directions cos(2 pi w (a +- b) / p) and sin(2 pi w (a +- b) / p) at the entries (w, +-w) and (-w, -+w). The
key frequencies are the `n_key` whose directions carry the most of the logits' norm at this evaluation.

restricted_loss  cross-entropy on all pairs of the logits projected onto the key directions, the mean over pairs
                 re-added: falls once the generalising circuit carries the logits
excluded_loss    cross-entropy on the training pairs of the logits with the key directions removed: rises as the
                 memorising part of the network gives way to the circuit
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from grokpipe.core.schema import Float, Int
from grokpipe.measures import Evaluation, Measure


def grid_bytes(p: int, m: int) -> int:
    """What one evaluation holds at once: the logits of every pair in float64, and their shifted copies."""
    return m * p**3 * 8 * 3


def pairs(ev: Evaluation, p: int) -> tuple[torch.Tensor, torch.Tensor, int] | None:
    """The logits of the train then val samples [M, N, C] in float64, each sample's pair index a p + b [M, N], and
    the number of training samples; None unless every member saw each of the p^2 pairs exactly once."""
    x = torch.cat([ev.inputs["train"], ev.inputs["val"]], 1)
    cell = (x[..., 0] * p + x[..., 1]).long()
    if cell.shape[1] != p * p:
        return None
    counts = torch.zeros(cell.shape[0], p * p, dtype=torch.long, device=cell.device).scatter_add_(
        1, cell, torch.ones_like(cell)
    )
    if not bool((counts == 1).all()):
        return None
    logits = torch.cat([ev.outputs["train"], ev.outputs["val"]], 1).double()
    return logits, cell, ev.inputs["train"].shape[1]


class RestrictedLoss(Measure):
    SCHEMA = {**Measure.SCHEMA, "n_key": Int(1, 10**6), "max_gib": Float(0, 1e6, lo_open=True)}
    columns = ("restricted_loss", "excluded_loss")

    def __init__(self, task, n_key: int = 5, max_gib: float = 1.0, **kwargs) -> None:
        super().__init__(task, **kwargs)
        self.n_key, self.max_gib = n_key, max_gib

    def applies(self, stack) -> str | None:
        if self.task.linear_sign is None:
            return f"defined for (a + b) mod p and (a - b) mod p, not task {self.task.name}"
        if self.n_key > (self.task.residues - 1) // 2:
            return f"n_key={self.n_key} is more than the {(self.task.residues - 1) // 2} frequencies of Z_p"
        gib = grid_bytes(self.task.residues, stack.m if stack is not None else 1) / 2**30
        if gib > self.max_gib:
            return f"the logits of all p^2 pairs in float64 would take {gib:.1f} GiB, over max_gib={self.max_gib:g}"
        return None

    def __call__(self, ev: Evaluation) -> dict:
        """The 2-D spectrum's entries (w, sign w) are a 1-D DFT of the logits summed along the diagonals r = (a + sign
        b) mod p, and the key directions are functions of r: so the key part of the logits, K_r, is a sum of a few
        cosines in r, and the measure costs O(p^2 C) (one pass over the logits) instead of 2-D FFTs of the grid."""
        p, sign = self.task.residues, self.task.linear_sign
        m = ev.outputs["train"].shape[0]
        seen = pairs(ev, p)
        if seen is None:
            nan = torch.full((m,), float("nan"), dtype=torch.float64, device=ev.outputs["train"].device)
            return {"restricted_loss": nan, "excluded_loss": nan}
        logits, cell, n_train = seen
        dev, c = logits.device, logits.shape[-1]
        diag = (cell // p + sign * (cell % p)) % p  # [M, N]: each sample's diagonal, which is also its label
        sums = logits.new_zeros(m, p, c).scatter_add_(1, diag.unsqueeze(-1).expand(-1, -1, c), logits)  # [M, r, C]
        r = torch.arange(p, device=dev, dtype=torch.float64)
        w = torch.arange(1, (p - 1) // 2 + 1, device=dev, dtype=torch.float64)
        phase = torch.polar(torch.ones(len(w), p, dtype=torch.float64, device=dev), 2 * torch.pi * w[:, None] * r / p)
        spectrum = torch.einsum("wr,mrc->mwc", phase.conj(), sums.to(phase.dtype))  # S[w, sign w]: [M, W, C]
        keys = spectrum.abs().pow(2).sum(-1).topk(self.n_key, dim=1).indices  # [M, n_key]: the strongest w
        rows = torch.arange(m, device=dev).unsqueeze(1)
        # the entries (k, sign k) and (-k, -sign k) of the inverse 2-D DFT: 2 Re(S e^{2 pi i k r / p}) / p^2
        key_part = 2 * torch.einsum("mkc,mkr->mrc", spectrum[rows, keys], phase[keys]).real / p**2  # [M, r, C]
        mean = logits.mean(1, keepdim=True)  # [M, 1, C]: the (0, 0) entry, the mean over all pairs
        # restricted logits depend on r alone: each diagonal's p pairs share one loss
        labels = torch.arange(p, device=dev).expand(m, p)
        restricted = F.cross_entropy((mean + key_part).transpose(1, 2), labels, reduction="none").mean(1)
        train, train_diag = logits[:, :n_train], diag[:, :n_train]
        excluded = F.cross_entropy(
            (train - key_part[rows, train_diag]).transpose(1, 2), train_diag, reduction="none"
        ).mean(1)
        return {"restricted_loss": restricted, "excluded_loss": excluded}
