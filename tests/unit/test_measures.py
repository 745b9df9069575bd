"""The progress measures against plain reference implementations: the Fourier basis written out, Nanda et al.'s
restricted and excluded loss built from explicit cos/sin(w(a + b)) directions, numpy's SVD, float32 softmax."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from helpers import compose_cfg
from omegaconf import OmegaConf, open_dict

from grokpipe.core.errors import ConfigError
from grokpipe.measures import Evaluation, build_measures, first_crossings
from grokpipe.measures.effective_rank import effective_rank
from grokpipe.measures.fourier import frequency_norms, gini, n_key
from grokpipe.measures.restricted_loss import RestrictedLoss
from grokpipe.measures.softmax_collapse import collapse
from grokpipe.tasks import build_task


def fourier_basis(p: int) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(k, cos_k, sin_k) over Z_p, each of unit norm."""
    x = np.arange(p)
    return [
        (k, np.cos(2 * np.pi * k * x / p) * math.sqrt(2 / p), np.sin(2 * np.pi * k * x / p) * math.sqrt(2 / p))
        for k in range(1, (p - 1) // 2 + 1)
    ]


def test_frequency_norms_are_the_projections_onto_each_cos_sin_pair():
    p, d = 13, 6
    w = torch.randn(2, p + 1, d, dtype=torch.float64)
    got = frequency_norms(w, p)
    for m in range(2):
        emb = w[m, :p].numpy()
        want = [math.sqrt(np.sum((c @ emb) ** 2) + np.sum((s @ emb) ** 2)) for _, c, s in fourier_basis(p)]
        np.testing.assert_allclose(got[m].numpy(), want, rtol=1e-10)


def test_an_embedding_of_two_frequencies_has_two_keys_and_a_high_gini():
    p = 31
    basis = fourier_basis(p)
    emb = np.stack([basis[2][1], basis[2][2], 0.5 * basis[6][1], np.zeros(p)], axis=1)  # frequencies 3 and 7
    norms = frequency_norms(torch.tensor(emb).unsqueeze(0), p)
    assert norms.topk(2).indices.add(1).tolist() == [[3, 7]]
    assert n_key(norms, 0.9).item() == 2 and gini(norms).item() > 0.85  # at most (K - 1) / K = 0.93
    assert gini(torch.ones(1, 15)).item() == pytest.approx(0.0, abs=1e-12)


def test_effective_rank_against_numpy():
    w = torch.randn(3, 20, 8, dtype=torch.float64)
    for m in range(3):
        s = np.linalg.svd(w[m].numpy(), compute_uv=False)
        q = s / s.sum()
        assert effective_rank(w)[m].item() == pytest.approx(math.exp(-(q * np.log(q)).sum()), rel=1e-10)
    assert effective_rank(torch.eye(5).unsqueeze(0)).item() == pytest.approx(5.0)
    diverged = torch.stack([torch.eye(5), torch.full((5, 5), float("nan"))])
    assert effective_rank(diverged)[0].item() == pytest.approx(5.0) and effective_rank(diverged)[1].isnan()


def test_softmax_collapse_counts_exact_floating_point_ones_and_zeros():
    logits = torch.tensor([[[0.0, 1.0, 2.0], [0.0, 0.0, 120.0], [200.0, 0.0, 0.0], [0.0, 30.0, 0.0]]])
    y = torch.tensor([[2, 2, 1, 1]])
    sc, zero = collapse(logits, y)
    # row 1: exp(-120) underflows next to 1; row 2 too, but its target is not the max (loss 200, not 0);
    # row 3: exp(-30) = 9e-14 is below float32's epsilon at 1, so the sum rounds to exactly 1
    z = logits - logits.amax(-1, keepdim=True)
    sums = z.exp().sum(-1)
    assert sums.tolist() == [[sums[0, 0].item(), 1.0, 1.0, 1.0]] and sums[0, 0].item() != 1.0
    assert sc.item() == pytest.approx(3 / 4) and zero.item() == pytest.approx(2 / 4)


def _reference_restricted(logits: np.ndarray, keys: list[int], train: np.ndarray, p: int) -> tuple[float, float]:
    """Nanda et al.'s construction, written out: project the [p*p, C] logits onto the unit directions
    cos(w(a+b)) and sin(w(a+b)) over the pair grid for each key w."""
    a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    labels = ((a + b) % p).reshape(-1)
    flat = logits.reshape(p * p, -1)
    mean = flat.mean(0, keepdims=True)
    part = np.zeros_like(flat)
    for w in keys:
        for f in (np.cos, np.sin):
            u = f(2 * np.pi * w * (a + b) / p).reshape(-1)
            u = u / np.linalg.norm(u)
            part += np.outer(u, u @ flat)

    def ce(lg, idx):
        lg = lg[idx]
        lse = np.log(np.exp(lg - lg.max(1, keepdims=True)).sum(1)) + lg.max(1)
        return float(np.mean(lse - lg[np.arange(len(lg)), labels[idx]]))

    everything = np.ones(p * p, dtype=bool)
    return ce(part + mean, everything), ce(flat - part, train.reshape(-1))


def test_restricted_and_excluded_loss_match_the_explicit_projection():
    p, n_key = 11, 2
    task = build_task(compose_cfg([f"task.p={p}"]).task)
    split = task.split()
    x = {"train": split.train_x.unsqueeze(0), "val": split.val_x.unsqueeze(0)}
    y = {"train": split.train_y.unsqueeze(0), "val": split.val_y.unsqueeze(0)}
    # logits with a strong (a + b) structure at frequencies 2 and 4 and noise elsewhere
    gen = torch.Generator().manual_seed(0)
    grid = torch.randn(p, p, p, generator=gen, dtype=torch.float64)
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    c = torch.arange(p)
    for w, amp in ((2, 6.0), (4, 3.0)):
        grid += amp * torch.cos(2 * math.pi * w * ((a + b).unsqueeze(-1) - c) / p)
    out = {s: grid[x[s][0, :, 0], x[s][0, :, 1]].unsqueeze(0) for s in ("train", "val")}
    ev = Evaluation(out, y, x, task, None, None, None)
    measure = RestrictedLoss(task, n_key=n_key)
    got = measure(ev)
    train = np.zeros((p, p), dtype=bool)
    train[split.train_x[:, 0], split.train_x[:, 1]] = True
    r, e = _reference_restricted(grid.numpy(), [2, 4], train, p)
    assert got["restricted_loss"].item() == pytest.approx(r, rel=1e-9)
    assert got["excluded_loss"].item() == pytest.approx(e, rel=1e-9)
    assert measure.applies(None) is None
    big = build_task(compose_cfg(["task.p=1009"]).task)
    assert "would take 23.0 GiB, over max_gib=1" in RestrictedLoss(big).applies(None)
    mul = build_task(compose_cfg(["task=mod_mul", "task.p=11"]).task)
    assert "not task mul11" in RestrictedLoss(mul).applies(None)


def test_a_crossing_needs_the_column_to_come_from_the_other_side():
    cfg = compose_cfg(["task.p=11"])
    measures = build_measures(cfg.measures, build_task(cfg.task))
    rows = [
        {"epoch": 10, "restricted_loss": 4.0, "excluded_loss": 4.0, "fourier_gini": 0.1, "sc_share": 0.0},
        {"epoch": 20, "restricted_loss": 0.5, "excluded_loss": 0.1, "fourier_gini": None, "sc_share": 0.0},
        {"epoch": 30, "restricted_loss": 0.2, "excluded_loss": 2.0, "fourier_gini": 0.3, "sc_share": 0.0},
    ]
    crossed = first_crossings(measures, rows)
    # excluded_loss starts above 1.0: only its rise after the dip counts
    assert crossed == {"fourier_gini": 30, "sc_share": None, "restricted_loss": 20, "excluded_loss": 30}


@pytest.mark.parametrize(
    "thresholds,message",
    [
        ({"val_acc": {"above": 0.5}}, "measures.fourier.thresholds.val_acc is not allowed: one of fourier_gini"),
        ({"fourier_gini": {"over": 0.5}}, "{above: <number>} or {below: <number>}"),
        ({"fourier_gini": {"above": "abc"}}, "{above: <number>} or {below: <number>}"),
    ],
)
def test_a_bad_threshold_is_refused_in_one_line(thresholds, message):
    cfg = compose_cfg(["task.p=11"])
    with open_dict(cfg):
        cfg.measures.fourier.thresholds = OmegaConf.create(thresholds)
    with pytest.raises(ConfigError, match=re.escape(message)):
        build_measures(cfg.measures, build_task(cfg.task))


def test_measures_of_a_pack_equal_those_of_its_members_alone(tmp_path):
    from grokpipe.core.outputs import read_metrics
    from grokpipe.run.train import run, train

    base = ["model=mlp", "task.p=23", "train.max_epochs=40", "logger=none", "train.plot=false", "train.print_every=0"]
    cfgs = [compose_cfg([*base, f"train.seed={s}"]) for s in (0, 1)]
    train(cfgs, [tmp_path / "p0", tmp_path / "p1"])
    for s in (0, 1):
        run(cfgs[s], tmp_path / f"s{s}")
        packed, alone = (
            read_metrics(tmp_path / f"p{s}" / "metrics.csv"),
            read_metrics(tmp_path / f"s{s}" / "metrics.csv"),
        )
        assert [set(r) for r in packed] == [set(r) for r in alone]
        for a, b in zip(packed, alone):
            for k in ("fourier_gini", "embed_erank", "restricted_loss", "excluded_loss", "sc_share"):
                assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-6), k


def test_a_measure_that_does_not_apply_says_so_once_and_the_run_goes_on(tmp_path, capsys):
    from grokpipe.run.train import run

    cfg = compose_cfg(["task=s5", "model=mlp", "train.max_epochs=20", "logger=none", "train.plot=false"])
    summary = run(cfg, tmp_path)
    err = capsys.readouterr().out
    assert "note: measure fourier does not apply: task s5 has no residue tokens" in err
    assert "note: measure restricted_loss does not apply: defined for (a + b) mod p" in err
    assert summary["status"] == "completed"
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "fourier_gini" not in header and "restricted_loss" not in header and "embed_erank" in header
