"""Nanda et al. (2023): attention + ReLU MLP without LayerNorm, outputs read at the last position.

Initialised as their code does: every weight N(0, 1/fan_in) with fan_in d_model (embeddings, attention, MLP input),
d_mlp (MLP output) or the vocabulary (unembedding); no attention or unembedding biases, MLP biases zero. The
initial scale matters: with torch's default N(0, 1) embeddings the weight norm starts about 4x larger and the run
had not grokked by epoch 13,700 (docs/analysis.md).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from grokpipe.models import ATTENTION_SCHEMA
from grokpipe.tasks import TaskSpec


class _Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_ff: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(d_model, n_heads, batch_first=True, bias=False)
        self.mlp = nn.Sequential(nn.Linear(d_model, d_ff), nn.ReLU(), nn.Linear(d_ff, d_model))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = h + self.attn(h, h, h, need_weights=False)[0]
        return h + self.mlp(h)


class NandaTransformer(nn.Module):
    SCHEMA = ATTENTION_SCHEMA

    def __init__(self, spec: TaskSpec, d_model: int, n_layers: int, n_heads: int, ff_mult: int, **_):
        super().__init__()
        self.tok = nn.Embedding(spec.vocab_size, d_model)
        self.pos = nn.Embedding(spec.seq_len, d_model)
        self.blocks = nn.Sequential(*(_Block(d_model, n_heads, ff_mult * d_model) for _ in range(n_layers)))
        self.head = nn.Linear(d_model, spec.n_outputs, bias=False)
        with torch.no_grad():
            for weight in (self.tok.weight, self.pos.weight):
                weight.normal_(0.0, 1.0 / math.sqrt(d_model))
            for block in self.blocks:
                block.attn.in_proj_weight.normal_(0.0, 1.0 / math.sqrt(d_model))
                block.attn.out_proj.weight.normal_(0.0, 1.0 / math.sqrt(d_model))
                w_in, _, w_out = block.mlp
                w_in.weight.normal_(0.0, 1.0 / math.sqrt(d_model))
                w_out.weight.normal_(0.0, 1.0 / math.sqrt(ff_mult * d_model))
                w_in.bias.zero_()
                w_out.bias.zero_()
            self.head.weight.normal_(0.0, 1.0 / math.sqrt(spec.vocab_size))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.tok(x) + self.pos.weight)[:, -1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
