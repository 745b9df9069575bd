"""The grokking interventions, each a config option: stablemax and ⊥Grad (Prieto et al. 2025), Muon, Omnigrok's
constant weight norm and Prieto et al.'s MLP. Each against a plain reference written here, a pack against its single
runs, a resumed run against a straight one, and all of them through launch.py."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_same_rows, compose_cfg, launch

from grokpipe.config.validate import prepare
from grokpipe.core.checkpoint import load_checkpoint
from grokpipe.core.errors import ConfigError
from grokpipe.core.outputs import read_metrics
from grokpipe.losses import build_loss
from grokpipe.models import build_model
from grokpipe.optim import build_optimizer
from grokpipe.optim.muon import newton_schulz
from grokpipe.run.stack import layout_of
from grokpipe.run.train import run
from grokpipe.run.train import train as train_packed
from grokpipe.tasks import TaskSpec, build_task

SPEC = TaskSpec(vocab_size=12, seq_len=3, n_outputs=11, query_token=True)
MODEL = ["model=mlp", "model.d_model=8", "model.hidden=24"]  # tok, two biased hidden layers (one tall), head


def members_of(model: list[str], optim: list[str], seeds=(0, 1)) -> tuple[list, torch.Tensor, list]:
    """Float64 models of `seeds`, their rows as flat [M, P], and optim nodes (warm-up 3, lr and wd differing)."""
    cfg = compose_cfg(model)
    nets = []
    for seed in seeds:
        torch.manual_seed(seed)
        nets.append(build_model(cfg.model, SPEC).double())
    flat = torch.stack([torch.cat([p.detach().flatten() for p in n.parameters()]) for n in nets])
    per_member = [["optim.lr=0.01", "optim.wd=0.5"], ["optim.lr=0.003", "optim.wd=0.1"]]
    optims = [compose_cfg([*optim, "optim.warmup_steps=3", *per_member[i % 2]]).optim for i in range(len(seeds))]
    return nets, flat, optims


def random_grads(step: int, flat: torch.Tensor) -> torch.Tensor:
    return torch.randn(flat.shape, generator=torch.Generator().manual_seed(100 + step), dtype=torch.float64)


def warmup(o, step: int) -> float:
    """The lr factor of step 1, 2, ... under o.warmup_steps (grokpipe.optim.warmup_lr, restated)."""
    return min(1.0, step / (o.warmup_steps + 1))


def rows_of(net: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in net.parameters()])


def set_grads(net: torch.nn.Module, row: torch.Tensor) -> None:
    offset = 0
    for p in net.parameters():
        p.grad = row[offset : offset + p.numel()].view_as(p).clone()
        offset += p.numel()


# ---------------------------------------------------------------- stablemax


def stablemax_reference(out: torch.Tensor, y: torch.Tensor) -> list[float]:
    """Per member, the mean over samples of -log(s(x_y) / sum_j s(x_j)), in Python floats (float64)."""
    s = lambda x: x + 1 if x >= 0 else 1 / (1 - x)
    losses = []
    for logits_m, y_m in zip(out.tolist(), y.tolist()):
        per_sample = [-math.log(s(row[t]) / sum(s(x) for x in row)) for row, t in zip(logits_m, y_m)]
        losses.append(sum(per_sample) / len(per_sample))
    return losses


def test_stablemax_equals_a_plain_reference():
    g = torch.Generator().manual_seed(0)
    out = torch.randn(2, 9, 7, generator=g, dtype=torch.float64) * 5
    out[0, 0] = torch.tensor([1e6, -1e6, 0.0, 3.0, -2.0, 1.0, 0.5])  # far beyond softmax's range
    y = torch.randint(0, 7, (2, 9), generator=g)
    loss = build_loss(compose_cfg(["loss=stablemax"]).loss)
    got = loss(out, y)
    assert got.shape == (2,) and got.dtype == torch.float64
    torch.testing.assert_close(got, torch.tensor(stablemax_reference(out, y), dtype=torch.float64), rtol=1e-12, atol=0)
    assert loss(out.float(), y).dtype == torch.float32  # the loss in the outputs' dtype; its log in float64


def test_stablemax_keeps_a_loss_and_gradient_where_softmax_collapses():
    # the right class 1e4 above the rest: exp(-1e4) is 0 in float64, so softmax cross-entropy is exactly 0
    out = torch.zeros(1, 4, 5, dtype=torch.float64)
    y = torch.tensor([[0, 1, 2, 3]])
    out[0, torch.arange(4), y[0]] = 1e4
    softmax_out = out.clone().requires_grad_(True)
    ce = build_loss(compose_cfg(["loss=cross_entropy"]).loss)(softmax_out, y)
    ce.sum().backward()
    assert ce.item() == 0.0 and not softmax_out.grad.any()
    stable_out = out.clone().requires_grad_(True)
    sm = build_loss(compose_cfg(["loss=stablemax"]).loss)(stable_out, y)
    sm.sum().backward()
    assert sm.item() == pytest.approx(stablemax_reference(out, y)[0], rel=1e-12) and sm.item() > 0
    assert stable_out.grad.abs().min() > 0 and torch.isfinite(stable_out.grad).all()


def test_stablemax_gradient_is_finite_at_the_kinks():
    out = torch.tensor([[[0.0, 1.0, -1.0, 2.0]]], dtype=torch.float64, requires_grad=True)  # 1 / (1 - x) blows up at 1
    build_loss(compose_cfg(["loss=stablemax"]).loss)(out, torch.tensor([[3]])).sum().backward()
    assert torch.isfinite(out.grad).all()
    torch.autograd.gradcheck(lambda o: build_loss(compose_cfg(["loss=stablemax"]).loss)(o, torch.tensor([[3]])), out)


# ---------------------------------------------------------------- ⊥Grad


def project(g: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Prieto et al.'s ⊥Grad on one tensor: g without its component along w, at the norm of g."""
    shape, g, w = g.shape, g.flatten(), w.flatten()
    orth = g - (g @ w) / (w @ w) * w
    return (orth * g.norm() / orth.norm()).view(shape)


@pytest.mark.parametrize("grokfast", [False, True])
def test_ortho_adamw_equals_torch_adamw_on_the_projected_gradient(grokfast):
    extra = ["optim.grokfast.enabled=true", "optim.grokfast.alpha=0.9"] if grokfast else []
    nets, flat, optims = members_of(MODEL, ["optim=ortho_adamw", *extra])
    opt = build_optimizer(flat, optims, layout_of(nets[0]))
    adamw = lambda n, o: torch.optim.AdamW(n.parameters(), lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.wd)
    refs = [adamw(n, o) for n, o in zip(nets, optims)]
    emas = [torch.zeros(flat.shape[1], dtype=torch.float64) for _ in nets]
    x = torch.randint(0, 11, (16, 3), generator=torch.Generator().manual_seed(1))
    for step in range(1, 4):
        grads = []
        for i, (net, ref, o) in enumerate(zip(nets, refs, optims)):
            net.zero_grad()
            F.cross_entropy(net(x), x[:, 0]).backward()  # a real gradient, not a random one
            grads.append(torch.cat([p.grad.flatten() for p in net.parameters()]))
            if grokfast:  # the filter first, on the raw gradient; then the projection
                emas[i].lerp_(grads[i], 1 - o.grokfast.alpha)
                set_grads(net, grads[i] + o.grokfast.lamb * emas[i])
            for p in net.parameters():
                p.grad = project(p.grad, p.detach())
            for group in ref.param_groups:
                group["lr"] = o.lr * warmup(o, step)
            ref.step()
        opt.step(torch.stack(grads), torch.ones(2, 1, dtype=torch.bool))
        for i, net in enumerate(nets):
            torch.testing.assert_close(flat[i], rows_of(net), atol=1e-6, rtol=0)
    assert not torch.allclose(flat[0], flat[1])


def test_the_update_receives_a_gradient_orthogonal_to_each_weight_tensor():
    nets, flat, optims = members_of(MODEL, ["optim=ortho_adamw"])
    layout = layout_of(nets[0])
    flat[1, layout[1].start : layout[1].start + layout[1].numel] = 0  # all-zero weights: the gradient is kept
    opt = build_optimizer(flat, optims, layout)
    seen = []
    opt.update = lambda grad, lr, active: seen.append(grad.clone())
    grad = random_grads(0, flat)
    head = layout[-2]
    cut = slice(head.start, head.start + head.numel)
    grad[0, cut] = 0  # no gradient: it stays 0 (0 / 0 nowhere)
    opt.step(grad.clone(), torch.ones(2, 1, dtype=torch.bool))
    (got,) = seen
    for i in range(2):
        for k, slot in enumerate(layout):
            cut = slice(slot.start, slot.start + slot.numel)
            g, w, before = got[i, cut], flat[i, cut], grad[i, cut]
            if (i, k) == (1, 1):
                torch.testing.assert_close(g, before, atol=0, rtol=0)
            elif (i, k) == (0, len(layout) - 2):
                assert not g.any()
            else:
                assert abs(g @ w) <= 1e-12 * g.norm() * w.norm(), (i, slot.name)
                assert g.norm().item() == pytest.approx(before.norm().item(), rel=1e-12), (i, slot.name)


# ---------------------------------------------------------------- Muon


def newton_schulz_reference(g: torch.Tensor) -> torch.Tensor:
    """Jordan's quintic iteration on one matrix, 5 steps, transposed to the wide side."""
    x = g / (g.norm() + 1e-7)
    tall = x.shape[0] > x.shape[1]
    x = x.T if tall else x
    for _ in range(5):
        a = x @ x.T
        x = 3.4445 * x + (-4.7750 * a + 2.0315 * a @ a) @ x
    return x.T if tall else x


def muon_reference(nets, optims, grads_of, steps: int) -> None:
    """Muon per member and per hidden matrix in loops, torch.optim.AdamW for the rest, `steps` steps, in place."""
    adams, momenta = [], []
    for net, o in zip(nets, optims):
        rest = [p for n, p in net.named_parameters() if not (p.ndim == 2 and n.startswith("body."))]
        a = o.adamw
        adams.append(torch.optim.AdamW(rest, lr=a.lr, betas=tuple(a.betas), eps=a.eps, weight_decay=a.wd))
        momenta.append({n: torch.zeros_like(p) for n, p in net.named_parameters()})
    for step in range(1, steps + 1):
        grads = grads_of(step)
        for i, (net, o, adam) in enumerate(zip(nets, optims, adams)):
            set_grads(net, grads[i])
            for group in adam.param_groups:
                group["lr"] = o.adamw.lr * warmup(o, step)
            adam.step()
            lr = o.lr * warmup(o, step)
            with torch.no_grad():
                for name, p in net.named_parameters():
                    if not (p.ndim == 2 and name.startswith("body.")):
                        continue
                    buf = momenta[i][name]
                    buf.mul_(o.momentum).add_(p.grad, alpha=1 - o.momentum)
                    nesterov = (1 - o.momentum) * p.grad + o.momentum * buf
                    update = newton_schulz_reference(nesterov) * max(1, p.shape[0] / p.shape[1]) ** 0.5
                    p.mul_(1 - lr * o.wd).sub_(lr * update)


@pytest.mark.parametrize("steps", [1, 6])
def test_muon_equals_a_per_matrix_reference(steps):
    nets, flat, optims = members_of(MODEL, ["optim=muon", "optim.adamw.wd=0.3"])
    start = flat.clone()
    layout = layout_of(nets[0])
    opt = build_optimizer(flat, optims, layout)
    assert [s.name for s in opt.matrices] == ["body.0.weight", "body.2.weight"]  # not tok, head or the biases
    for step in range(1, steps + 1):
        opt.step(random_grads(step, flat), torch.ones(2, 1, dtype=torch.bool))
    muon_reference(nets, optims, lambda step: random_grads(step, flat), steps)
    for i, net in enumerate(nets):
        torch.testing.assert_close(flat[i], rows_of(net), atol=1e-6, rtol=0)
        for slot in layout:  # every tensor moved: a part skipped would pass only if the reference skipped it too
            cut = slice(slot.start, slot.start + slot.numel)
            assert not torch.equal(flat[i, cut], start[i, cut]), slot.name


def test_newton_schulz_is_near_orthogonal_and_batched():
    g = torch.randn(3, 12, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    got = newton_schulz(g, 5)
    for i in range(3):
        torch.testing.assert_close(got[i], newton_schulz_reference(g[i]), atol=1e-12, rtol=0)
        sv = torch.linalg.svdvals(got[i])
        assert 0.6 < sv.min() and sv.max() < 1.25  # the quintic's band around 1, not U V^T exactly
    assert not newton_schulz(torch.zeros(2, 4, 5, dtype=torch.float64), 5).any()


# ---------------------------------------------------------------- constant weight norm, and frozen members


@pytest.mark.parametrize("optim", ["adamw", "adam", "sgd", "muon", "ortho_adamw"])
def test_constant_norm_holds_the_scaled_initial_norm(optim):
    on = ["optim.constant_norm.enabled=true", "optim.constant_norm.alpha=2.5"]
    nets, flat, optims = members_of(MODEL, [f"optim={optim}", *on])
    initial = flat.norm(dim=1)
    opt = build_optimizer(flat, optims, layout_of(nets[0]))
    torch.testing.assert_close(flat.norm(dim=1), 2.5 * initial, atol=0, rtol=1e-14)
    for step in range(20):
        opt.step(random_grads(step, flat), torch.ones(2, 1, dtype=torch.bool))
    torch.testing.assert_close(flat.norm(dim=1), 2.5 * initial, atol=0, rtol=1e-12)
    assert opt.member_state(1)["target_norm"].item() == pytest.approx(2.5 * initial[1].item(), rel=1e-14)


@pytest.mark.parametrize(
    "optim",
    [["optim=muon"], ["optim=ortho_adamw"], ["optim=sgd", "optim.orthogonal=true", "optim.constant_norm.enabled=true"]],
)
def test_a_frozen_member_keeps_parameters_and_state(optim):
    nets, flat, optims = members_of(MODEL, optim)
    opt = build_optimizer(flat, optims, layout_of(nets[0]))
    opt.step(random_grads(0, flat), torch.ones(2, 1, dtype=torch.bool))
    before, state = flat[1].clone(), opt.member_state(1)
    opt.step(random_grads(1, flat), torch.tensor([[True], [False]]))
    assert torch.equal(flat[1], before)
    torch.testing.assert_close(opt.member_state(1), state, atol=0, rtol=0)
    assert opt.member_state(0)["steps"] == 2 and state["steps"] == 1


# ---------------------------------------------------------------- the model


def test_prieto_mlp_is_the_one_hot_mlp():
    cfg = compose_cfg(["model=prieto_mlp", "model.d_model=200"])
    net = build_model(cfg.model, SPEC)
    shapes = {n: tuple(p.shape) for n, p in net.named_parameters()}
    assert shapes == {"tok.weight": (2 * 12, 200), "body.1.weight": (200, 200), "head.weight": (11, 200)}  # no biases
    x = torch.randint(0, 11, (5, 3), generator=torch.Generator().manual_seed(0))
    one_hot = torch.cat([F.one_hot(x[:, 0], 12), F.one_hot(x[:, 1], 12)], 1).float()  # [a | b], '=' ignored
    w1, w2, w3 = net.tok.weight.T, net.body[1].weight, net.head.weight
    reference = torch.relu(torch.relu(one_hot @ w1.T) @ w2.T) @ w3.T
    torch.testing.assert_close(net(x), reference, atol=1e-6, rtol=1e-6)
    bound = 1 / math.sqrt(2 * 12)  # as nn.Linear(2 * vocab, 200) initialises its weight
    assert net.tok.weight.abs().max() <= bound and net.tok.weight.std() > 0.8 * bound / math.sqrt(3)


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["optim.orthogonal=1"], "optim.orthogonal=1"),
        (["optim.constant_norm.alpha=0"], "optim.constant_norm.alpha=0"),
        (["optim.constant_norm.enabled=yes"], "optim.constant_norm.enabled='yes'"),
        (["optim=muon", "optim.ns_steps=0"], "optim.ns_steps=0"),
        (["optim=muon", "optim.momentum=1.0"], "optim.momentum=1.0"),
        (["optim=muon", "optim.adamw.betas=[1.0,0.9]"], "optim.adamw.betas[0]=1.0"),
        (["optim=muon", "optim.adamw.lr=0"], "optim.adamw.lr=0"),
        (["optim=muon", "~optim.adamw.eps"], "optim.adamw.eps"),
        (["model=prieto_mlp", "+model.hidden=8"], "model.hidden"),
    ],
)
def test_bad_values_of_the_new_keys_are_refused_in_one_line(overrides, key):
    with pytest.raises(ConfigError) as err:
        prepare(compose_cfg(overrides))
    assert str(err.value).startswith(key) and "\n" not in str(err.value)


# ---------------------------------------------------------------- real trainings: packed, resumed, launched

TINY = [
    "model=mlp",
    "task.p=23",
    "train.max_epochs=40",
    "train.patience=null",
    "measures=[loss,task_metrics,weight_norm,lr]",
    "logger=none",
    "train.plot=false",
    "train.print_every=0",
]
OPTIONS = {
    "stablemax": ["loss=stablemax", "optim.wd=0"],
    "orthogonal": ["optim=ortho_adamw", "optim.lr=3e-3"],
    "muon": ["optim=muon"],
    "constant_norm": ["optim.constant_norm.enabled=true", "optim.constant_norm.alpha=2"],
    "prieto_mlp": ["model=prieto_mlp", "model.d_model=48", "optim.lr=3e-3"],
}


@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_a_pack_equals_its_single_runs_and_a_resumed_run_a_straight_one(option, tmp_path, float64_one_thread):
    def cfg(seed: int, epochs: int = 40):
        return compose_cfg([*TINY, *OPTIONS[option], f"train.seed={seed}", f"train.max_epochs={epochs}"])

    packed = train_packed([cfg(0), cfg(1)], [tmp_path / "m0", tmp_path / "m1"])
    singles = [run(cfg(seed), tmp_path / f"s{seed}") for seed in (0, 1)]
    for i, (p, s) in enumerate(zip(packed, singles)):
        assert p["epochs_run"] == s["epochs_run"] == 40
        for key in ("final_train_loss", "final_val_loss", "final_weight_norm"):
            assert p[key] == pytest.approx(s[key], abs=1e-6), (i, key)
        a, b = (load_checkpoint(tmp_path / d / "checkpoints" / "last.pt") for d in (f"m{i}", f"s{i}"))
        torch.testing.assert_close(a["model"], b["model"], atol=1e-6, rtol=0)
        torch.testing.assert_close(a["optimizer"], b["optimizer"], atol=1e-6, rtol=0)
    assert packed[0]["final_train_loss"] != pytest.approx(packed[1]["final_train_loss"], abs=1e-4)  # seeds differ

    run(cfg(0, epochs=20), tmp_path / "resumed")
    resumed = run(cfg(0), tmp_path / "resumed")
    assert resumed["final_train_loss"] == pytest.approx(singles[0]["final_train_loss"], abs=1e-6)
    assert_same_rows(tmp_path / "resumed" / "metrics.csv", read_metrics(tmp_path / "s0" / "metrics.csv"))
    a, b = (load_checkpoint(tmp_path / d / "checkpoints" / "last.pt") for d in ("resumed", "s0"))
    torch.testing.assert_close(a["model"], b["model"], atol=1e-6, rtol=0)
    torch.testing.assert_close(a["optimizer"], b["optimizer"], atol=1e-6, rtol=0)
    if option == "constant_norm":  # held at twice the initial norm throughout, across the resume
        norms = [r["weight_norm"] for r in read_metrics(tmp_path / "resumed" / "metrics.csv")]
        torch.manual_seed(0)  # the run's initial weights, as train() builds them
        initial = rows_of(build_model(cfg(0).model, build_task(cfg(0).task).spec)).norm().item()
        assert a["optimizer"]["target_norm"].item() == pytest.approx(2 * initial, rel=1e-12)
        assert all(n == pytest.approx(2 * initial, rel=1e-5) for n in norms)  # metrics.csv holds 6 digits


def test_every_option_trains_through_launch_py(tmp_path):
    args = [
        "model=prieto_mlp",
        "model.d_model=16",
        "loss=stablemax",
        "optim=muon",
        "optim.orthogonal=true",
        "optim.constant_norm.enabled=true",
        "optim.constant_norm.alpha=1.5",
        "task.p=11",
        "train.max_epochs=3",
        "train.eval_every=1",
        "measures=[loss,task_metrics,weight_norm,lr]",
        "logger=none",
        "train.plot=false",
        "train.print_every=0",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    done = launch(args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert (summary["model"], summary["optimizer"], summary["epochs_run"]) == ("prieto_mlp", "muon", 3)
    assert math.isfinite(summary["final_train_loss"])
    rows = read_metrics(tmp_path / "run" / "metrics.csv")
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert max(r["weight_norm"] for r in rows) == pytest.approx(min(r["weight_norm"] for r in rows), rel=1e-5)
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert ckpt["config"]["loss"]["name"] == "stablemax" and ckpt["config"]["optim"]["orthogonal"] is True
    assert {"momentum_buffer", "exp_avg", "exp_avg_sq", "target_norm"} <= set(ckpt["optimizer"])


def test_options_left_off_keep_a_runs_identity_as_before_they_existed():
    from grokpipe.run.record import identity

    plain = identity(compose_cfg(["optim=adamw"]))["optim"]
    assert "orthogonal" not in plain and "constant_norm" not in plain  # a checkpoint written before them resumes
    on = identity(compose_cfg(["optim=ortho_adamw", "optim.constant_norm.enabled=true"]))["optim"]
    assert on["orthogonal"] is True and on["constant_norm"] == {"enabled": True, "alpha": 1.0}
