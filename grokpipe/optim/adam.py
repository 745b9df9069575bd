"""Adam (Kingma & Ba) with weight decay as L2 in the gradient, as torch.optim.Adam applies it."""

from __future__ import annotations

from grokpipe.optim.adamw import AdamW


class Adam(AdamW):
    decoupled = False
