"""Seed 003's transformer: token + positional embeddings, pre-LayerNorm GELU blocks, final LayerNorm, mean pool."""

from __future__ import annotations

import torch
from torch import nn

from grokpipe.models import ATTENTION_SCHEMA, operands
from grokpipe.tasks import TaskSpec


class GrokTransformer(nn.Module):
    """Reads the operand positions only, mean-pools them, and maps the pooled features to the outputs."""

    SCHEMA = ATTENTION_SCHEMA

    def __init__(self, spec: TaskSpec, d_model: int, n_layers: int, n_heads: int, ff_mult: int, **_):
        super().__init__()
        self.n_in = operands(spec)
        self.tok = nn.Embedding(spec.vocab_size, d_model)
        self.pos = nn.Embedding(self.n_in, d_model)
        layer = nn.TransformerEncoderLayer(
            d_model, n_heads, ff_mult * d_model, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, spec.n_outputs)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Mean-pooled representation of the operands: what the probes and the head read."""
        h = self.tok(x[:, : self.n_in]) + self.pos.weight
        return self.norm(self.blocks(h)).mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
