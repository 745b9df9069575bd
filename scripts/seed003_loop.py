"""Seed 003's training loop as its project's train.py runs it: what a researcher would otherwise run.

Written for the benchmarks from seed 003's description (nothing of grokpipe is imported): a hand-written
pre-LayerNorm transformer (token + positional embeddings, one fused qkv Linear, explicit softmax(q kᵀ / √d_head) v,
GELU MLP, final LayerNorm, mean pool over the two operand tokens, linear head), full-batch AdamW (lr 1e-3, betas
0.9/0.98), a 50% train/val split of all p² pairs; each epoch forward, cross-entropy, zero_grad, backward, step;
train and val evaluated every 10 epochs through `.item()`; grok = val accuracy ≥ 0.95 for 10 evaluations; one
checkpoint at the end.

    python scripts/seed003_loop.py --prime 97 --d_model 128 --weight_decay 1.0 --epochs 120
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

EVAL_EVERY, WINDOW, GROK_AT = 10, 10, 0.95


class Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_ff: int) -> None:
        super().__init__()
        self.n_heads, self.d_head = n_heads, d_model // n_heads
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.ff1, self.ff2 = nn.Linear(d_model, d_ff), nn.Linear(d_ff, d_model)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        q, k, v = self.qkv(x).view(n, t, 3, self.n_heads, self.d_head).permute(2, 0, 3, 1, 4)
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(self.d_head), dim=-1)
        return self.proj((weights @ v).transpose(1, 2).reshape(n, t, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.ln1(x))
        return x + self.ff2(F.gelu(self.ff1(self.ln2(x))))


class GrokTransformer(nn.Module):
    def __init__(self, p: int, d_model: int, n_layers: int = 2, n_heads: int = 4, ff_mult: int = 4) -> None:
        super().__init__()
        self.tok = nn.Embedding(p, d_model)
        self.pos = nn.Embedding(2, d_model)
        self.blocks = nn.ModuleList(Block(d_model, n_heads, ff_mult * d_model) for _ in range(n_layers))
        self.ln = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.tok(x) + self.pos.weight
        for block in self.blocks:
            h = block(h)
        return self.head(self.ln(h).mean(dim=1))


def data(p: int, seed: int) -> tuple[torch.Tensor, ...]:
    """Every pair (a, b) with its label (a + b) mod p, shuffled, half for training."""
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    x, y = torch.stack([a.reshape(-1), b.reshape(-1)], dim=1), (a + b).reshape(-1) % p
    order = torch.randperm(p * p, generator=torch.Generator().manual_seed(seed))
    n = p * p // 2
    return x[order[:n]], y[order[:n]], x[order[n:]], y[order[n:]]


def adamw(model: nn.Module, lr: float = 1e-3, weight_decay: float = 1.0) -> torch.optim.AdamW:
    """Seed 003's optimiser: AdamW with betas 0.9/0.98."""
    return torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=weight_decay)


def train_epoch(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
    """One full-batch epoch: forward, cross-entropy, zero_grad, backward, step."""
    model.train()
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()


@torch.no_grad()
def evaluate(model: nn.Module, splits: dict) -> dict:
    """Loss and accuracy of each split {name: (x, y)}, read back through `.item()`."""
    model.eval()
    row = {}
    for split, (x, y) in splits.items():
        out = model(x)
        row[f"{split}_loss"] = F.cross_entropy(out, y).item()
        row[f"{split}_acc"] = (out.argmax(-1) == y).float().mean().item()
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prime", type=int, default=97)
    ap.add_argument("--d_model", type=int, default=128)
    ap.add_argument("--weight_decay", type=float, default=1.0)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--epochs", type=int, default=50000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("seed003_loop_out"))
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    train_x, train_y, val_x, val_y = data(args.prime, args.seed)
    model = GrokTransformer(args.prime, args.d_model)
    opt = adamw(model, args.lr, args.weight_decay)
    history, streak, grok_epoch, start = [], 0, None, time.time()
    splits = {"train": (train_x, train_y), "val": (val_x, val_y)}
    for epoch in range(1, args.epochs + 1):
        train_epoch(model, opt, train_x, train_y)
        if epoch % EVAL_EVERY == 0:
            row = {"epoch": epoch, **evaluate(model, splits)}
            history.append(row)
            streak = streak + 1 if row["val_acc"] >= GROK_AT else 0
            if streak == WINDOW and grok_epoch is None:
                grok_epoch = epoch - (WINDOW - 1) * EVAL_EVERY
                print(f"grokked at epoch {grok_epoch}", flush=True)
                break
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch}, args.out / "final.pt")
    last = history[-1] if history else {}  # a run shorter than one evaluation has none
    summary = {"grok_epoch": grok_epoch, "epochs": epoch, "seconds": time.time() - start, **last}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
