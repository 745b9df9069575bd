"""Seed 003's transformer: token + positional embeddings, pre-LayerNorm GELU blocks, final LayerNorm, mean pool.

The blocks are written out by hand rather than run through `nn.TransformerEncoderLayer`: same parameters (names,
shapes, order, initialisation: a checkpoint of either loads into the other, and a seed gives the same weights), same
function, less work for the two or three tokens a task has:

- the attention is a few small tensor ops: with two tokens, softmax over two scores is the sigmoid of their
  difference, so each head's output is v₀ + σ(q·(k₁ − k₀)/√d_head)(v₁ − v₀), with no score matrix, transposes or
  copies; other lengths take the explicit softmax(q kᵀ/√d_head) v;
- the first block's LayerNorm and qkv projection see only (position, token) pairs, so they are computed once per
  pair (vocabulary × positions rows) and gathered per sample, not computed for every sample.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from grokpipe.models import ATTENTION_SCHEMA, members, operands
from grokpipe.tasks import TaskSpec


class SelfAttention(nn.Module):
    """`nn.MultiheadAttention`'s parameters and initialisation (xavier-uniform in-projection, zero biases)."""

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads, self.d_head = n_heads, d_model // n_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * d_model, d_model))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * d_model))
        self.out_proj = nn.Linear(d_model, d_model)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.in_proj_bias)
        nn.init.zeros_(self.out_proj.bias)

    def qkv(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.in_proj_weight, self.in_proj_bias)

    def forward(self, qkv: torch.Tensor) -> torch.Tensor:
        """The heads' output, projected: qkv [N, T, 3 d_model] -> [N, T, d_model]."""
        return self.out_proj(heads(qkv, self.n_heads))


def heads(qkv: torch.Tensor, n_heads: int) -> torch.Tensor:
    """The attention heads' outputs, concatenated: qkv [N, T, 3 d_model] -> [N, T, d_model]."""
    n, t, three_d = qkv.shape
    h, dh = n_heads, three_d // 3 // n_heads
    scale = 1.0 / math.sqrt(dh)
    if t == 2:
        q, k, v = qkv.view(n, 2, 3, h, dh).unbind(2)  # each [N, 2, H, dh]
        diff = (q * (k[:, 1] - k[:, 0]).unsqueeze(1)).sum(-1, keepdim=True)  # s_i1 - s_i0 / scale: [N, 2, H, 1]
        mixed = torch.addcmul(v[:, :1], torch.sigmoid(diff * scale), (v[:, 1] - v[:, 0]).unsqueeze(1))
    else:
        q, k, v = qkv.view(n, t, 3, h, dh).permute(2, 0, 3, 1, 4)  # each [N, H, T, dh]
        weights = torch.softmax((q @ k.transpose(-2, -1)) * scale, dim=-1)
        mixed = (weights @ v).transpose(1, 2)
    return mixed.reshape(n, t, h * dh)


class EncoderLayer(nn.Module):
    """`nn.TransformerEncoderLayer(norm_first=True, activation="gelu", dropout=0)`: its parameters, its function."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int) -> None:
        super().__init__()
        self.self_attn = SelfAttention(d_model, n_heads)
        self.linear1 = nn.Linear(d_model, d_ff)
        self.linear2 = nn.Linear(d_ff, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor, qkv: torch.Tensor | None = None) -> torch.Tensor:
        """x [N, T, d_model]; `qkv`, when given, is the attention's input projection of norm1(x), computed already."""
        if qkv is None:
            qkv = self.self_attn.qkv(self.norm1(x))
        x = x + self.self_attn(qkv)
        return x + self.linear2(F.gelu(self.linear1(self.norm2(x))))


class Encoder(nn.Module):
    """`n_layers` copies of one layer, equal at initialisation (as `nn.TransformerEncoder` makes them)."""

    def __init__(self, layer: EncoderLayer, n_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(n_layers))


def _gather(table: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """table[rows]. On the CPU through index_select, whose backward (index_add in sample order) is the embedding
    backward's bits at a fifth of its time (which sorts the rows first); elsewhere the embedding's backward, which
    is deterministic on CUDA."""
    if table.device.type != "cpu":
        return F.embedding(rows, table)
    return table.index_select(0, rows.reshape(-1)).view(*rows.shape, table.shape[-1])


class GrokTransformer(nn.Module):
    """Reads the operand positions only, mean-pools them, and maps the pooled features to the outputs."""

    SCHEMA = ATTENTION_SCHEMA

    def __init__(self, spec: TaskSpec, d_model: int, n_layers: int, n_heads: int, ff_mult: int, **_):
        super().__init__()
        self.n_in = operands(spec)
        self.tok = nn.Embedding(spec.vocab_size, d_model)
        self.pos = nn.Embedding(self.n_in, d_model)
        self.blocks = Encoder(EncoderLayer(d_model, n_heads, ff_mult * d_model), n_layers)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, spec.n_outputs)

    def _first(self, x: torch.Tensor) -> torch.Tensor:
        """The first block's output on the operand tokens x [N, T]."""
        first = self.blocks.layers[0]
        n, t = x.shape
        vocab = self.tok.num_embeddings
        if n <= vocab:  # fewer samples than table rows: per sample
            return first(self.tok(x) + self.pos.weight)
        table = self.tok.weight.unsqueeze(0) + self.pos.weight.unsqueeze(1)  # [T, V, d]: every (position, token)
        rows = x + torch.arange(0, t * vocab, vocab, device=x.device)  # row of (t, x[:, t]) in the flat table
        qkv = first.self_attn.qkv(first.norm1(table))
        return first(_gather(table.flatten(0, 1), rows), _gather(qkv.flatten(0, 1), rows))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Mean-pooled representation of the operands: what the probes and the head read."""
        h = self._first(x[:, : self.n_in])
        for layer in self.blocks.layers[1:]:
            h = layer(h)
        return self.norm(h).mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    # ---------------------------------------------------------------- every member of a pack at once
    def forward_members(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """`forward` of M members on their own inputs x [M, N, seq_len], each with its parameters
        params[name] [M, *shape]: [M, N, n_outputs]. Reads only the module's sizes, not its parameters."""
        h = self._first_members(params, x[..., : self.n_in])
        for i in range(1, len(self.blocks.layers)):
            h = self._layer_members(params, i, h)
        # the head of the mean of the final norm: the norm's affine commutes with the mean, so it folds into the head
        pooled = F.layer_norm(h, h.shape[-1:], eps=self.norm.eps).mean(dim=2)
        head = members.fold(params["norm.weight"], params["norm.bias"], params["head.weight"], params["head.bias"])
        return members.linear(pooled, *head)

    def _first_members(self, params: dict, x: torch.Tensor) -> torch.Tensor:
        m, n, t = x.shape
        tok, pos = params["tok.weight"], params["pos.weight"]  # [M, V, d], [M, T, d]
        vocab = tok.shape[1]
        if n <= vocab:
            return self._layer_members(params, 0, members.gather(tok, x) + pos.unsqueeze(1))
        table = tok.unsqueeze(1) + pos.unsqueeze(2)  # [M, T, V, d]: every (position, token)
        rows = x + torch.arange(0, t * vocab, vocab, device=x.device)
        first = "blocks.layers.0."
        norm = self.blocks.layers[0].norm1
        qkv = members.norm_linear(
            table,
            params[first + "norm1.weight"],
            params[first + "norm1.bias"],
            norm.eps,
            params[first + "self_attn.in_proj_weight"],
            params[first + "self_attn.in_proj_bias"],
        )
        return self._layer_members(
            params, 0, members.gather(table.flatten(1, 2), rows), members.gather(qkv.flatten(1, 2), rows)
        )

    def _layer_members(self, params: dict, i: int, x: torch.Tensor, qkv: torch.Tensor | None = None) -> torch.Tensor:
        """Layer i of every member: x [M, N, T, d]; qkv, when given, its attention's input projection of norm1(x)."""
        layer, p = self.blocks.layers[i], f"blocks.layers.{i}."
        if qkv is None:
            norm_w, norm_b = params[p + "norm1.weight"], params[p + "norm1.bias"]
            w, b = params[p + "self_attn.in_proj_weight"], params[p + "self_attn.in_proj_bias"]
            qkv = members.norm_linear(x, norm_w, norm_b, layer.norm1.eps, w, b)
        m, n, t, d = x.shape
        mixed = heads(qkv.reshape(m * n, t, 3 * d), layer.self_attn.n_heads).view(m, n, t, d)
        x = x + members.linear(mixed, params[p + "self_attn.out_proj.weight"], params[p + "self_attn.out_proj.bias"])
        norm_w, norm_b = params[p + "norm2.weight"], params[p + "norm2.bias"]
        w, b = params[p + "linear1.weight"], params[p + "linear1.bias"]
        hidden = F.gelu(members.norm_linear(x, norm_w, norm_b, layer.norm2.eps, w, b))
        return x + members.linear(hidden, params[p + "linear2.weight"], params[p + "linear2.bias"])
