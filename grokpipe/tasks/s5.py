"""Composition in the permutation group S5 (Power et al.): (a . b)(i) = a(b(i)), over all 120 x 120 pairs."""

from __future__ import annotations

import itertools

import torch

from grokpipe.tasks import Task, TaskSpec

ORDER = 120


class S5Task(Task):
    """Inputs are (a, b, '=') with permutations numbered 0..119 and '=' token 120; the target is a . b."""

    @classmethod
    def size_of(cls, node) -> int:
        return ORDER

    @classmethod
    def n_samples_of(cls, node) -> int:
        return ORDER * ORDER

    def __init__(self, train_frac: float, split_seed: int, generalize_at: float, memorize_at: float) -> None:
        super().__init__(train_frac, split_seed)
        self.size, self.name = ORDER, "s5"
        self.spec = TaskSpec(vocab_size=ORDER + 1, seq_len=3, n_outputs=ORDER, output="classes", query_token=True)
        self.generalize = {"val_acc": (">=", generalize_at)}
        self.memorize = {"train_acc": (">=", memorize_at)}

    def pairs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        perms = list(itertools.permutations(range(5)))
        index = {perm: i for i, perm in enumerate(perms)}
        a, b = torch.meshgrid(torch.arange(ORDER), torch.arange(ORDER), indexing="ij")
        a, b = a.flatten(), b.flatten()
        # apply b first, then a
        y = torch.tensor([index[tuple(perms[i][j] for j in perms[k])] for i, k in zip(a.tolist(), b.tolist())])
        return a, b, y

    def encode(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.stack([a, b, torch.full_like(a, ORDER)], dim=1)

    def samples(self) -> tuple[torch.Tensor, torch.Tensor]:
        a, b, y = self.pairs()
        return self.encode(a, b), y
