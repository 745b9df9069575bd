"""Seed 004's model: token + positional embeddings, causal post-LayerNorm ReLU encoder layers, and a linear read-out
at every position through a sigmoid: one value in (0, 1) per position, for tasks with real targets per position.

As the notebook builds it (torch's nn.TransformerEncoderLayer, modules in the same order, so a seed gives the same
initial weights), then every weight matrix (embeddings, attention, feed-forward, read-out) re-drawn xavier-normal
with gain `init_gain`; biases and LayerNorms keep torch's initialisation. Dropout is off: the notebook's layers have
torch's default 0.1, but its first evaluation (step 500 of 50000) leaves the model in eval mode for the rest of the
run, so dropout only acts on its first 1% of steps.
"""

from __future__ import annotations

import torch
from torch import nn

from grokpipe.core.schema import Float, Int
from grokpipe.models import BASE_SCHEMA
from grokpipe.tasks import TaskSpec


class CausalTransformer(nn.Module):
    SCHEMA = {
        **BASE_SCHEMA,
        "n_layers": Int(1, 64),
        "n_heads": Int(1, 1024),
        "hidden_size": Int(1, 2**20),  # the feed-forward width
        "init_gain": Float(0, 1e3, lo_open=True),
    }
    output = "real"  # the task output kind it reads out: one real value per position

    def __init__(
        self, spec: TaskSpec, d_model: int, n_layers: int, n_heads: int, hidden_size: int, init_gain: float, **_
    ):
        super().__init__()
        self.tok = nn.Embedding(spec.vocab_size, d_model)
        self.pos = nn.Embedding(spec.seq_len, d_model)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(d_model, n_heads, hidden_size, dropout=0.0, batch_first=True)
            for _ in range(n_layers)
        )
        self.head = nn.Linear(d_model, 1)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_normal_(p, gain=init_gain)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last layer's state at every position [N, seq_len, d_model]: what the read-out reads."""
        s = x.shape[1]
        causal = torch.ones(s, s, dtype=torch.bool, device=x.device).triu(1)  # position i sees 0..i
        h = self.tok(x) + self.pos.weight[:s]
        for layer in self.layers:
            h = layer(h, src_mask=causal)
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.head(self.features(x)).squeeze(-1))
