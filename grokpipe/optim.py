"""Optimisers, the linear warm-up, and the Grokfast EMA gradient filter (Lee et al., 2024)."""

from __future__ import annotations

import torch
from torch import nn


def build_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    """AdamW (decoupled decay), Adam or SGD (decay as L2 in the gradient), from `conf/optim/*.yaml`."""
    params, betas = list(model.parameters()), tuple(cfg.betas)
    # on CUDA the fused kernels: one launch for the whole update instead of one per op per parameter group
    fused = {"fused": True} if params and params[0].is_cuda else {}
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=betas, weight_decay=cfg.wd, **fused)
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=betas, weight_decay=cfg.wd, **fused)
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.wd)
    raise ValueError(f"optim.name={cfg.name!r} is unknown; allowed: adamw, adam, sgd")


def build_scheduler(cfg, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over `optim.warmup_steps` optimizer steps, then constant."""
    warmup = max(int(cfg.warmup_steps), 0)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / (warmup + 1)))


class Grokfast:
    """Adds `lamb` times an EMA of past gradients to each gradient: amplifies the slow, generalising component."""

    def __init__(self, model: nn.Module, alpha: float, lamb: float):
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.alpha, self.lamb = alpha, lamb
        self.ema = [torch.zeros_like(p) for p in self.params]

    @torch.no_grad()
    def __call__(self) -> None:
        grads = [p.grad for p in self.params]
        torch._foreach_lerp_(self.ema, grads, 1.0 - self.alpha)
        torch._foreach_add_(grads, self.ema, alpha=self.lamb)

    def state_dict(self) -> dict:
        return {"ema": self.ema}

    def load_state_dict(self, state: dict) -> None:
        for dst, src in zip(self.ema, state["ema"]):
            dst.copy_(src)
