"""The stacked optimisers equal torch's own, member by member, and a frozen member does not move."""

from __future__ import annotations

import pytest
import torch
from helpers import compose_cfg

from grokpipe.optim import build_optimizer

TORCH = {
    "adamw": lambda ps, o: torch.optim.AdamW(ps, lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.wd),
    "adam": lambda ps, o: torch.optim.Adam(ps, lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.wd),
    "sgd": lambda ps, o: torch.optim.SGD(ps, lr=o.lr, momentum=o.momentum, weight_decay=o.wd),
}


def _grad(step: int, member: int, n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1000 * member + step)
    return torch.randn(n, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("name", sorted(TORCH))
@pytest.mark.parametrize("grokfast", [False, True])
def test_stacked_equals_torch_for_each_member_to_1e6(name, grokfast):
    members = [
        compose_cfg([f"optim={name}", "optim.lr=0.01", "optim.wd=0.5", "optim.warmup_steps=5"]).optim,
        compose_cfg([f"optim={name}", "optim.lr=0.003", "optim.wd=0.0", "optim.warmup_steps=0"]).optim,
    ]
    if grokfast:
        members = [compose_cfg([f"optim={name}", "optim.grokfast.enabled=true", "optim.grokfast.alpha=0.9"]).optim] * 2
    n = 37
    start = torch.randn(2, n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    flat = start.clone()
    stacked = build_optimizer(flat, members)
    refs = [torch.nn.Parameter(start[i].clone()) for i in range(2)]
    opts = [TORCH[name]([p], o) for p, o in zip(refs, members)]
    scheds = [
        torch.optim.lr_scheduler.LambdaLR(opt, lambda s, w=o.warmup_steps: min(1.0, (s + 1) / (w + 1)))
        for opt, o in zip(opts, members)
    ]
    emas = [torch.zeros(n, dtype=torch.float64) for _ in range(2)]
    active = torch.ones(2, 1, dtype=torch.bool)
    for step in range(100):
        grads = torch.stack([_grad(step, i, n) for i in range(2)])
        stacked.step(grads.clone(), active)
        for i, (p, opt, sched) in enumerate(zip(refs, opts, scheds)):
            g = grads[i].clone()
            if grokfast:  # Lee et al.'s filter: g + lamb * EMA(g)
                emas[i].lerp_(g, 1 - members[i].grokfast.alpha)
                g = g + members[i].grokfast.lamb * emas[i]
            p.grad = g
            opt.step()
            sched.step()
    for i in range(2):
        torch.testing.assert_close(flat[i], refs[i].detach(), atol=1e-6, rtol=0)
        assert stacked.lr()[i].item() == pytest.approx(scheds[i].get_last_lr()[0])


@pytest.mark.parametrize("name", sorted(TORCH))
def test_a_frozen_member_keeps_parameters_and_state(name):
    members = [compose_cfg([f"optim={name}"]).optim] * 2
    flat = torch.randn(2, 11, dtype=torch.float64)
    opt = build_optimizer(flat, members)
    opt.step(torch.randn(2, 11, dtype=torch.float64), torch.ones(2, 1, dtype=torch.bool))
    before, state = flat[1].clone(), opt.member_state(1)
    opt.step(torch.randn(2, 11, dtype=torch.float64), torch.tensor([[True], [False]]))
    assert torch.equal(flat[1], before)
    torch.testing.assert_close(opt.member_state(1), state, atol=0, rtol=0)
    assert opt.member_state(0)["steps"] == 2 and state["steps"] == 1


def test_member_state_round_trips():
    members = [compose_cfg(["optim=adamw"]).optim] * 3
    flat = torch.randn(3, 9)
    a = build_optimizer(flat, members)
    for _ in range(3):
        a.step(torch.randn(3, 9), torch.ones(3, 1, dtype=torch.bool))
    b = build_optimizer(flat.clone(), members)
    b.load_member(2, a.member_state(0))
    torch.testing.assert_close(b.member_state(2), a.member_state(0), atol=0, rtol=0)
