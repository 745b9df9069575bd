"""Algorithmic datasets: every (a, b) pair of a binary operation, split into train and val."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

MODULAR_OPS = {
    "add": lambda a, b, p: (a + b) % p,
    "sub": lambda a, b, p: (a - b) % p,
    "mul": lambda a, b, p: (a * b) % p,
    "div": lambda a, b, p: (a * pow_mod(b, p - 2, p)) % p,
    "x2_y2": lambda a, b, p: (a**2 + b**2) % p,
    "x2_xy_y2": lambda a, b, p: (a**2 + a * b + b**2) % p,
    "x2_xy_y2_x": lambda a, b, p: (a**2 + a * b + b**2 + a) % p,
    "x3_xy": lambda a, b, p: (a**3 + a * b) % p,
    "x3_xy2_y": lambda a, b, p: (a**3 + a * b**2 + b) % p,
}
OPS = (*MODULAR_OPS, "s5")


def pow_mod(b: torch.Tensor, e: int, p: int) -> torch.Tensor:
    """b**e mod p elementwise by square-and-multiply (no overflow for p < 2**31)."""
    result, base = torch.ones_like(b), b % p
    while e:
        if e & 1:
            result = result * base % p
        base = base * base % p
        e >>= 1
    return result


@dataclass
class Dataset:
    """Inputs are token triples (a, b, '='); '=' is token `n_classes`."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    n_classes: int

    @property
    def vocab_size(self) -> int:
        return self.n_classes + 1

    def to(self, device: torch.device | str) -> Dataset:
        return Dataset(*(t.to(device) for t in (self.train_x, self.train_y, self.val_x, self.val_y)), self.n_classes)


def all_pairs(op: str, p: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Every pair (a, b) the operation is defined on, its label, and the number of classes."""
    if op == "s5":
        perms = list(itertools.permutations(range(5)))
        index = {perm: i for i, perm in enumerate(perms)}
        n = len(perms)
        a, b = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
        a, b = a.flatten(), b.flatten()
        # (a . b)(i) = a(b(i)): apply b first, then a
        y = torch.tensor([index[tuple(perms[i][j] for j in perms[k])] for i, k in zip(a.tolist(), b.tolist())])
        return a, b, y, n
    if op not in MODULAR_OPS:
        raise ValueError(f"task.op={op!r} is unknown; allowed: {', '.join(OPS)}")
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    a, b = a.flatten(), b.flatten()
    if op == "div":
        a, b = a[b != 0], b[b != 0]
    return a, b, MODULAR_OPS[op](a, b, p), p


def make_dataset(op: str, p: int, train_frac: float, split_seed: int) -> Dataset:
    """All pairs, shuffled by `split_seed` and cut at `train_frac`: disjoint, complete, deterministic."""
    a, b, y, n = all_pairs(op, p)
    x = torch.stack([a, b, torch.full_like(a, n)], dim=1)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(split_seed))
    n_train = int(round(train_frac * len(y)))
    tr, va = order[:n_train], order[n_train:]
    return Dataset(x[tr], y[tr], x[va], y[va], n)
