"""Seeds 000/001: embeddings of the operands concatenated, two hidden ReLU layers."""

from __future__ import annotations

import torch
from torch import nn

from grokpipe.models import MLP_SCHEMA, members, operands
from grokpipe.tasks import TaskSpec


class MLP(nn.Module):
    SCHEMA = MLP_SCHEMA

    def __init__(self, spec: TaskSpec, d_model: int, hidden: int, **_):
        super().__init__()
        self.n_in = operands(spec)
        self.tok = nn.Embedding(spec.vocab_size, d_model)
        self.body = nn.Sequential(
            nn.Linear(self.n_in * d_model, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()
        )
        self.head = nn.Linear(hidden, spec.n_outputs)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.tok(x[:, : self.n_in]).flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def forward_members(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """`forward` of M members on their own inputs x [M, N, seq_len], with params[name] [M, *shape]."""
        h = members.gather(params["tok.weight"], x[..., : self.n_in]).flatten(2)
        h = torch.relu(members.linear(h, params["body.0.weight"], params["body.0.bias"]))
        h = torch.relu(members.linear(h, params["body.2.weight"], params["body.2.bias"]))
        return members.linear(h, params["head.weight"], params["head.bias"])
