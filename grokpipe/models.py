"""The networks grokpipe trains. Each takes token triples (a, b, '=') of shape (N, 3) and returns logits (N, classes).

Every model is built from its `conf/model/*.yaml` (the `_target_` there) plus the task's vocabulary.
"""

from __future__ import annotations

import torch
from torch import nn


class GrokTransformer(nn.Module):
    """Seed 003: token + positional embeddings, pre-LayerNorm GELU blocks, final LayerNorm, mean pool, linear head."""

    def __init__(self, vocab_size: int, n_classes: int, d_model: int, n_layers: int, n_heads: int, ff_mult: int, **_):
        super().__init__()
        self.tok = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(2, d_model)
        layer = nn.TransformerEncoderLayer(
            d_model, n_heads, ff_mult * d_model, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Mean-pooled representation of (a, b): what the probes and the head read."""
        h = self.tok(x[:, :2]) + self.pos.weight
        return self.norm(self.blocks(h)).mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class _NandaBlock(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_ff: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(d_model, n_heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(d_model, d_ff), nn.ReLU(), nn.Linear(d_ff, d_model))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = h + self.attn(h, h, h, need_weights=False)[0]
        return h + self.mlp(h)


class NandaTransformer(nn.Module):
    """Nanda et al. (2023): attention + ReLU MLP without LayerNorm, logits read at the '=' position."""

    def __init__(self, vocab_size: int, n_classes: int, d_model: int, n_layers: int, n_heads: int, ff_mult: int, **_):
        super().__init__()
        self.tok = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(3, d_model)
        self.blocks = nn.Sequential(*(_NandaBlock(d_model, n_heads, ff_mult * d_model) for _ in range(n_layers)))
        self.head = nn.Linear(d_model, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.tok(x) + self.pos.weight)[:, -1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class MLP(nn.Module):
    """Seeds 000/001: embeddings of a and b concatenated, two hidden ReLU layers."""

    def __init__(self, vocab_size: int, n_classes: int, d_model: int, hidden: int, **_):
        super().__init__()
        self.tok = nn.Embedding(vocab_size, d_model)
        self.body = nn.Sequential(nn.Linear(2 * d_model, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.tok(x[:, :2]).flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class TiedMLP(nn.Module):
    """Seed 002: factored MLP; the output layer projects back onto the input embedding (tied weights)."""

    def __init__(self, vocab_size: int, n_classes: int, d_model: int, hidden: int, **_):
        super().__init__()
        self.n_classes = n_classes
        self.tok = nn.Embedding(vocab_size, d_model)
        self.up = nn.Linear(2 * d_model, hidden)
        self.down = nn.Linear(hidden, d_model)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.up(self.tok(x[:, :2]).flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.features(x)) @ self.tok.weight[: self.n_classes].T


def build_model(model_cfg, vocab_size: int, n_classes: int) -> nn.Module:
    """Instantiate the model named by `model._target_` for a task's vocabulary."""
    from hydra.utils import instantiate

    return instantiate(model_cfg, vocab_size=vocab_size, n_classes=n_classes, _convert_="all")
