"""Fourier structure of the token embedding over Z_p (Nanda et al. 2023): how few frequencies carry its norm.

Row x of the embedding (token x, x in Z_p) is written in the Fourier basis of Z_p; frequency k (1..(p-1)/2) has
the cos/sin pair cos(2 pi k x / p), sin(2 pi k x / p), each of unit norm, and its norm is that of the embedding's
projection onto the pair. A generalising network concentrates its embedding on a few key frequencies.

fourier_gini   Gini coefficient of the per-frequency norms: 0 when spread evenly, towards 1 when concentrated
fourier_n_key  key frequencies: the fewest that carry `key_share` of the squared norm (the constant part aside)
fourier_key1.. the strongest `n_top` frequencies, strongest first
fourier_norm_k every frequency's norm, with `per_frequency: true` (a column per frequency)
"""

from __future__ import annotations

import torch

from grokpipe.core.schema import Bool, Float, Int
from grokpipe.measures import Evaluation, Measure

EMBEDDING = "tok.weight"  # every model's token embedding: [vocab_size, d_model]


def frequency_norms(embedding: torch.Tensor, p: int) -> torch.Tensor:
    """[M, (p-1)//2] norms of the cos/sin pairs of frequencies 1..(p-1)//2 of rows 0..p-1 of `embedding` [M, V, d]."""
    spectrum = torch.fft.rfft(embedding[:, :p].double(), dim=1)[:, 1 : (p - 1) // 2 + 1]  # [M, K, d]
    # with unit-norm cos and sin vectors, |DFT_k|^2 = p/2 (|<cos_k, w>|^2 + |<sin_k, w>|^2)
    return (spectrum.abs().pow(2).sum(-1) * 2 / p).sqrt()


def gini(x: torch.Tensor) -> torch.Tensor:
    """[M] Gini coefficient of each row of x [M, K] (non-negative)."""
    k = x.shape[1]
    sorted_x, _ = x.sort(dim=1)
    ranks = torch.arange(1, k + 1, dtype=x.dtype, device=x.device)
    total = sorted_x.sum(1).clamp_min(torch.finfo(x.dtype).tiny)
    return ((2 * ranks - k - 1) * sorted_x).sum(1) / (k * total)


def n_key(norms: torch.Tensor, share: float) -> torch.Tensor:
    """[M] the fewest frequencies whose squared norms reach `share` of the total."""
    energy, _ = norms.pow(2).sort(dim=1, descending=True)
    cumulative = energy.cumsum(1) / energy.sum(1, keepdim=True).clamp_min(torch.finfo(energy.dtype).tiny)
    return (cumulative < share).sum(1).double() + 1


class FourierStructure(Measure):
    SCHEMA = {
        **Measure.SCHEMA,
        "key_share": Float(0, 1, lo_open=True),
        "n_top": Int(0, 64),
        "per_frequency": Bool(),
    }

    def __init__(self, task, key_share: float = 0.9, n_top: int = 3, per_frequency: bool = False, **kwargs) -> None:
        super().__init__(task, **kwargs)
        self.key_share, self.p = key_share, task.residues
        k = (self.p - 1) // 2 if self.p else 0
        self.n_top = min(n_top, k)
        self.per_frequency = per_frequency
        self.columns = (
            "fourier_gini",
            "fourier_n_key",
            *(f"fourier_key{i + 1}" for i in range(self.n_top)),
            *(f"fourier_norm_{f}" for f in range(1, k + 1) if per_frequency),
        )

    def applies(self, stack) -> str | None:
        if not self.task.residues or self.task.residues < 3:
            return f"task {self.task.name} has no residue tokens to take a Fourier transform over"
        if EMBEDDING not in {s.name for s in stack.layout}:
            return f"the model has no token embedding {EMBEDDING}"
        return None

    def __call__(self, ev: Evaluation) -> dict:
        norms = frequency_norms(ev.stack.param(EMBEDDING), self.p)
        out = {"fourier_gini": gini(norms), "fourier_n_key": n_key(norms, self.key_share)}
        top = norms.topk(self.n_top, dim=1).indices.double() + 1
        out.update({f"fourier_key{i + 1}": top[:, i] for i in range(self.n_top)})
        if self.per_frequency:
            out.update({f"fourier_norm_{f + 1}": norms[:, f] for f in range(norms.shape[1])})
        return out
