"""Seed 002: factored MLP; the output layer projects back onto the input embedding (tied weights)."""

from __future__ import annotations

import torch
from torch import nn

from grokpipe.models import MLP_SCHEMA, operands
from grokpipe.tasks import TaskSpec


class TiedMLP(nn.Module):
    """Class c's logit is the hidden state's projection onto token c's embedding: outputs must be tokens."""

    SCHEMA = MLP_SCHEMA
    output = "classes"  # its read-out is the token embeddings: logits of classes that are tokens

    def __init__(self, spec: TaskSpec, d_model: int, hidden: int, **_):
        super().__init__()
        self.n_in, self.n_outputs = operands(spec), spec.n_outputs
        self.tok = nn.Embedding(spec.vocab_size, d_model)
        self.up = nn.Linear(self.n_in * d_model, hidden)
        self.down = nn.Linear(hidden, d_model)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.up(self.tok(x[:, : self.n_in]).flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.features(x)) @ self.tok.weight[: self.n_outputs].T
