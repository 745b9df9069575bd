"""Binary operations mod a prime p: every pair (a, b) the operation is defined on, labelled op(a, b) mod p."""

from __future__ import annotations

import torch

from grokpipe.core.schema import Choice, Int, refuse
from grokpipe.tasks import Task, TaskSpec

OPS = {
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


def pow_mod(b: torch.Tensor, e: int, p: int) -> torch.Tensor:
    """b**e mod p elementwise by square-and-multiply (no overflow for p < 2**31)."""
    result, base = torch.ones_like(b), b % p
    while e:
        if e & 1:
            result = result * base % p
        base = base * base % p
        e >>= 1
    return result


def is_prime(n: int) -> bool:
    return n >= 2 and all(n % k for k in range(2, int(n**0.5) + 1))


class ModularTask(Task):
    """Inputs are token triples (a, b, '='), '=' being token p; the target is op(a, b) mod p, one of p classes."""

    SCHEMA = {
        **Task.SCHEMA,
        "op": Choice(tuple(OPS)),
        "p": Int(2, 2**31 - 1),  # pow_mod cannot overflow below 2**31
    }

    @classmethod
    def size_of(cls, node) -> int:
        return node.p

    @classmethod
    def n_samples_of(cls, node) -> int:
        return node.p * (node.p - 1 if node.op == "div" else node.p)

    @classmethod
    def check(cls, node) -> None:
        if not is_prime(node.p):
            refuse("task.p", node.p, "must be a prime (e.g. 23, 47, 59, 97, 113)")
        super().check(node)

    def __init__(
        self, op: str, p: int, train_frac: float, split_seed: int, generalize_at: float, memorize_at: float
    ) -> None:
        super().__init__(train_frac, split_seed)
        if op not in OPS:
            raise ValueError(f"task.op={op!r} is unknown; allowed: {', '.join(OPS)}")
        self.op, self.p, self.size, self.name = op, p, p, f"{op}{p}"
        self.residues, self.linear_sign = p, {"add": 1, "sub": -1}.get(op)
        self.spec = TaskSpec(vocab_size=p + 1, seq_len=3, n_outputs=p, output="classes", query_token=True)
        self.generalize = {"val_acc": (">=", generalize_at)}
        self.memorize = {"train_acc": (">=", memorize_at)}

    def pairs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Operands a, b and labels of every pair the operation is defined on (b != 0 for div)."""
        a, b = torch.meshgrid(torch.arange(self.p), torch.arange(self.p), indexing="ij")
        a, b = a.flatten(), b.flatten()
        if self.op == "div":
            a, b = a[b != 0], b[b != 0]
        return a, b, OPS[self.op](a, b, self.p)

    def encode(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Token sequences [N, 3] of operand pairs."""
        return torch.stack([a, b, torch.full_like(a, self.p)], dim=1)

    def samples(self) -> tuple[torch.Tensor, torch.Tensor]:
        a, b, y = self.pairs()
        return self.encode(a, b), y
