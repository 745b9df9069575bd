"""Prieto et al. (2025)'s MLP: one-hot operands concatenated, two bias-free ReLU layers of width d_model, a bias-free
linear read-out.

The first layer on the concatenated one-hots [x_1 | x_2] is held as one embedding `tok` of n_in * vocab_size rows:
row k * vocab_size + t is the first layer's column for token t at operand position k, so tok.weight[:p] are operand
a's input weights [p, d_model] (what the Fourier measures read) and summing the rows the operands pick is the layer's
product with the one-hots. It is initialised as nn.Linear(n_in * vocab_size, d_model) would be.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from grokpipe.models import BASE_SCHEMA, operands
from grokpipe.tasks import TaskSpec


class PrietoMLP(nn.Module):
    SCHEMA = BASE_SCHEMA

    def __init__(self, spec: TaskSpec, d_model: int, **_):
        super().__init__()
        self.n_in, self.vocab = operands(spec), spec.vocab_size
        self.tok = nn.Embedding(self.n_in * self.vocab, d_model)
        bound = 1 / math.sqrt(self.n_in * self.vocab)  # nn.Linear's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        nn.init.uniform_(self.tok.weight, -bound, bound)
        self.body = nn.Sequential(nn.ReLU(), nn.Linear(d_model, d_model, bias=False), nn.ReLU())
        self.head = nn.Linear(d_model, spec.n_outputs, bias=False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        offsets = torch.arange(self.n_in, device=x.device) * self.vocab
        return self.body(self.tok(x[:, : self.n_in] + offsets).sum(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
