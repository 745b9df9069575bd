"""The running fraction of the letter x (seed 004): a sequence task with one real target per position.

Each sample is `seq_len` letters a..z holding 0 to seq_len // 2 x's at random positions, every other position a
random letter other than x; the target at position i is (the x's in positions 0..i) / (i + 1). `n_samples`
sequences are drawn once from `data_seed`, then split by `split_seed` at `train_frac`. The metric is the mean
absolute error over positions (`mae`); the loss (MSE) is the mean squared one. Grokked: val MAE at or below
`generalize_at` for train.grok_window evaluations; memorised: train MAE at or below `memorize_at`.
"""

from __future__ import annotations

import torch

from grokpipe.core.schema import Float, Int
from grokpipe.tasks import Task, TaskSpec

LETTERS = "abcdefghijklmnopqrstuvwxyz"
X = LETTERS.index("x")
MAE = Float(0, 1, lo_open=True, hi_open=True)  # 0 is never reached in floating point, 1 always is


class FracXTask(Task):
    """Inputs are letter sequences [N, seq_len] (tokens 0..25); targets [N, seq_len], the running fraction of x's."""

    SCHEMA = {
        **Task.SCHEMA,
        "seq_len": Int(2, 128),
        "n_samples": Int(2, 10**6),
        "data_seed": Int(0, 2**63 - 1),
        "generalize_at": MAE,
        "memorize_at": MAE,
    }
    output = "real"
    metric_names = ("mae",)

    @classmethod
    def size_of(cls, node) -> int:
        return len(LETTERS)

    @classmethod
    def n_samples_of(cls, node) -> int:
        return node.n_samples

    def __init__(
        self,
        seq_len: int,
        n_samples: int,
        data_seed: int,
        train_frac: float,
        split_seed: int,
        generalize_at: float,
        memorize_at: float,
    ) -> None:
        super().__init__(train_frac, split_seed)
        self.seq_len, self.n_samples, self.data_seed = seq_len, n_samples, data_seed
        self.size, self.name = len(LETTERS), "frac_x"
        self.spec = TaskSpec(vocab_size=len(LETTERS), seq_len=seq_len, n_outputs=seq_len, output="real")
        self.generalize = {"val_mae": ("<=", generalize_at)}
        self.memorize = {"train_mae": ("<=", memorize_at)}

    def samples(self) -> tuple[torch.Tensor, torch.Tensor]:
        n, s = self.n_samples, self.seq_len
        g = torch.Generator().manual_seed(self.data_seed)
        n_x = torch.randint(0, s // 2 + 1, (n, 1), generator=g)
        # the n_x positions of lowest random rank hold the x's: a uniformly random placement
        rank = torch.rand(n, s, generator=g).argsort(1).argsort(1)
        is_x = rank < n_x
        other = torch.randint(0, len(LETTERS) - 1, (n, s), generator=g)
        other = other + (other >= X)  # the 25 letters other than x
        x = torch.where(is_x, X, other)
        y = is_x.cumsum(1).float() / torch.arange(1, s + 1, dtype=torch.float32)
        return x, y

    def metrics(self, out: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Mean absolute error over samples and positions, per member: out, y [M, N, seq_len] -> [M]."""
        return {"mae": (out - y).abs().flatten(1).mean(1)}
