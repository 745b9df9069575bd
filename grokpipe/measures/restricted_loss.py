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

from grokpipe.measures import Evaluation, Measure
from grokpipe.schema import Float, Int


def grid_bytes(p: int, m: int) -> int:
    """What one evaluation holds at once: the float64 grid, its complex spectrum and two complex inverses."""
    return m * p**3 * (8 + 3 * 16)


def logit_grid(ev: Evaluation, p: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits [M, p, p, C] over all pairs, whether each pair is a training pair [M, p, p], and whether each pair
    was seen at all [M, p, p], assembled from the evaluation's train and val samples."""
    m, c = ev.outputs["train"].shape[0], ev.outputs["train"].shape[-1]
    grid = ev.outputs["train"].new_zeros(m, p * p, c, dtype=torch.float64)
    seen = torch.zeros(m, p * p, dtype=torch.bool, device=grid.device)
    train = torch.zeros_like(seen)
    for split in ("train", "val"):
        x = ev.inputs[split]
        cell = (x[..., 0] * p + x[..., 1]).long()  # [M, N]
        grid.scatter_(1, cell.unsqueeze(-1).expand(-1, -1, c), ev.outputs[split].double())
        seen.scatter_(1, cell, True)
        if split == "train":
            train.scatter_(1, cell, True)
    return grid.view(m, p, p, c), train.view(m, p, p), seen.view(m, p, p)


def key_masks(spectrum: torch.Tensor, sign: int, n_key: int) -> torch.Tensor:
    """[M, p, p] 1 at the entries of the `n_key` strongest frequencies' (a + sign b) directions, else 0."""
    m, p = spectrum.shape[:2]
    w = torch.arange(1, (p - 1) // 2 + 1, device=spectrum.device)
    energy = spectrum[:, w, (sign * w) % p].abs().pow(2).sum(-1)  # [M, K]: the -w entries are its conjugates
    keys = w[energy.topk(n_key, dim=1).indices]  # [M, n_key]
    mask = torch.zeros(m, p, p, dtype=torch.float64, device=spectrum.device)
    rows = torch.arange(m, device=spectrum.device).unsqueeze(1)
    mask[rows, keys, (sign * keys) % p] = 1
    mask[rows, (-keys) % p, (-sign * keys) % p] = 1
    return mask


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
            return f"its [p, p, p] logit grid and spectrum would take {gib:.1f} GiB, over max_gib={self.max_gib:g}"
        return None

    def __call__(self, ev: Evaluation) -> dict:
        p, sign = self.task.residues, self.task.linear_sign
        grid, train, seen = logit_grid(ev, p)
        if not bool(seen.all()):
            nan = grid.new_full((grid.shape[0],), float("nan"))
            return {"restricted_loss": nan, "excluded_loss": nan}
        spectrum = torch.fft.fft2(grid, dim=(1, 2))
        keys = key_masks(spectrum, sign, self.n_key).unsqueeze(-1)
        mean = torch.zeros_like(keys)
        mean[:, 0, 0] = 1  # the (0, 0) entry: the mean over pairs
        restricted = torch.fft.ifft2(spectrum * (keys + mean), dim=(1, 2)).real
        excluded = torch.fft.ifft2(spectrum * (1 - keys), dim=(1, 2)).real
        a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
        labels = ((a + sign * b) % p).to(grid.device)
        per_pair = lambda logits: F.cross_entropy(
            logits.permute(0, 3, 1, 2), labels.expand(len(logits), p, p), reduction="none"
        )  # noqa: E731
        r, e = per_pair(restricted), per_pair(excluded)
        return {
            "restricted_loss": r.mean((1, 2)),
            "excluded_loss": (e * train).sum((1, 2)) / train.sum((1, 2)),
        }
