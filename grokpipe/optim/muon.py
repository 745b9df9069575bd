"""Muon (Jordan et al. 2024): for the hidden weight matrices, the Nesterov momentum orthogonalised by a quintic
Newton–Schulz iteration; AdamW, with its own lr, betas, eps and weight decay, for everything else.

A hidden matrix is a 2-D parameter outside the token and positional embeddings (`tok.*`, `pos.*`) and the read-out
(`head.*`); biases, norms' gains and every other non-2-D parameter go to AdamW. Each matrix's step is
lr * max(1, rows / cols) ** 0.5 * NS(momentum), batched over the members ([M, rows, cols] matmuls), in the
parameters' dtype. Weight decay is decoupled for both parts (p *= 1 - lr * wd). The warm-up scales both lrs.
`optim.lr` and `optim.wd` (per member) are Muon's; `optim.adamw.*` is shared by a pack.
"""

from __future__ import annotations

import torch

from grokpipe.core.schema import Bool, Float, Int, Section
from grokpipe.optim import StackedOptimizer
from grokpipe.optim.adamw import BETAS, EPS, adam_update

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)  # Jordan's quintic: fast growth of small singular values towards ~1
ADAMW_PREFIXES = ("tok.", "pos.", "head.")


def newton_schulz(g: torch.Tensor, steps: int) -> torch.Tensor:
    """[..., r, c]: each matrix of g brought near U V^T (g = U S V^T) by `steps` quintic Newton–Schulz iterations,
    from g divided by its Frobenius norm (+1e-7, so a zero matrix stays zero)."""
    a, b, c = NS_COEFFICIENTS
    x = g / (torch.linalg.matrix_norm(g, keepdim=True) + 1e-7)
    tall = x.shape[-2] > x.shape[-1]
    if tall:  # iterate on the smaller Gram matrix x x^T
        x = x.mT
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.mT if tall else x


def is_hidden_matrix(slot) -> bool:
    return len(slot.shape) == 2 and not slot.name.startswith(ADAMW_PREFIXES)


class Muon(StackedOptimizer):
    state_names = ("momentum_buffer", "exp_avg", "exp_avg_sq")  # Muon's momentum; AdamW's moments
    SCHEMA = {
        **StackedOptimizer.SCHEMA,
        "momentum": Float(0, 1, hi_open=True),
        "nesterov": Bool(),
        "ns_steps": Int(1, 100),
        "adamw": Section({"lr": Float(0, None, lo_open=True), "betas": BETAS, "eps": EPS, "wd": Float(0, 1e4)}),
    }

    def __init__(self, flat: torch.Tensor, members, layout=None) -> None:
        super().__init__(flat, members, layout)
        if not self.layout:
            raise ValueError("Muon needs the parameters' layout to tell matrices from the rest")
        o = members[0]
        self.momentum, self.nesterov, self.ns_steps = float(o.momentum), bool(o.nesterov), int(o.ns_steps)
        self.adam_lr, self.adam_wd = float(o.adamw.lr), float(o.adamw.wd)
        self.adam_betas, self.adam_eps = (float(o.adamw.betas[0]), float(o.adamw.betas[1])), float(o.adamw.eps)
        self.matrices = [s for s in self.layout if is_hidden_matrix(s)]
        self.adam_ranges = []  # column ranges of the AdamW parameters, neighbours merged
        for s in self.layout:
            if is_hidden_matrix(s):
                continue
            if self.adam_ranges and self.adam_ranges[-1][1] == s.start:
                self.adam_ranges[-1][1] = s.start + s.numel
            else:
                self.adam_ranges.append([s.start, s.start + s.numel])

    def update(self, grad: torch.Tensor, lr: torch.Tensor, active: torch.Tensor) -> None:
        p, dt, m = self.flat.detach(), self.flat.dtype, self.m
        adam_lr = lr * (self.adam_lr / self.base_lr)  # the warm-up's factor, and 0 for a frozen member
        avg, avg_sq, buf = self.state["exp_avg"], self.state["exp_avg_sq"], self.state["momentum_buffer"]
        for a, b in self.adam_ranges:
            part = (t[:, a:b] for t in (p, grad, avg, avg_sq))
            adam_update(*part, adam_lr, self.adam_wd, self.steps, active, self.adam_betas, self.adam_eps)
        take = self.mask(active, 1 - self.momentum, 0.0).view(m, 1, 1)
        decay, step_lr = (1 - lr * self.wd).to(dt).view(m, 1, 1), lr.to(dt).view(m, 1, 1)
        for s in self.matrices:
            rows, cols = s.shape
            cut = slice(s.start, s.start + s.numel)
            g, mom, w = (t[:, cut].view(m, rows, cols) for t in (grad, buf, p))
            mom.lerp_(g, take)
            direction = g.lerp(mom, self.momentum) if self.nesterov else mom
            w.mul_(decay).sub_(newton_schulz(direction, self.ns_steps) * (step_lr * max(1.0, rows / cols) ** 0.5))
