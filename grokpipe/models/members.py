"""The building blocks of a forward over a pack's member axis, with each member's own weights [M, ...].

A CPU pack of a built-in model runs `model.forward_members(params, x)` (`grokpipe.run.stack.VmapStack`): the same
function as the module's forward for every member at once, each weight a view of the stack's [M, P] row, the
linear maps as one batched matmul each, the element-wise ops over the whole pack as one call each.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """Each member's F.linear: x [M, ..., in], w [M, out, in], b [M, out] -> [M, ..., out]."""
    m = x.shape[0]
    flat = x.reshape(m, -1, x.shape[-1])
    if b is None:
        out = torch.bmm(flat, w.transpose(1, 2))
    else:
        out = torch.baddbmm(b.unsqueeze(1), flat, w.transpose(1, 2))
    return out.view(*x.shape[:-1], w.shape[1])


def fold(norm_w: torch.Tensor, norm_b: torch.Tensor, w: torch.Tensor, b: torch.Tensor):
    """A LayerNorm's affine (norm_w, norm_b [M, in]) folded into the linear map after it (w [M, out, in], b [M, out]):
    W diag(norm_w) and W norm_b + b, so that linear(norm(x)) = linear(normalised x, *fold(...))."""
    return w * norm_w.unsqueeze(1), torch.baddbmm(b.unsqueeze(-1), w, norm_b.unsqueeze(-1)).squeeze(-1)


def norm_linear(
    x: torch.Tensor, norm_w: torch.Tensor, norm_b: torch.Tensor, eps: float, w: torch.Tensor, b: torch.Tensor
) -> torch.Tensor:
    """Each member's linear(LayerNorm(x)), with the norm's affine folded into the linear map (`fold`): the
    [M, N, ...] activations take one pass less, and the norm's weight gradients come from small matmuls rather than
    from reductions over every sample. The same function; the rounding differs."""
    return linear(F.layer_norm(x, x.shape[-1:], eps=eps), *fold(norm_w, norm_b, w, b))


def gather(table: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """table[i][rows[i]] for each member i: table [M, R, d], rows [M, ...] -> [M, ..., d]. Through index_select on
    the flat table (its backward is index_add in sample order, deterministic)."""
    m, r, d = table.shape
    offset = torch.arange(0, m * r, r, device=rows.device).view(-1, *([1] * (rows.dim() - 1)))
    return table.reshape(m * r, d).index_select(0, (rows + offset).reshape(-1)).view(*rows.shape, d)
