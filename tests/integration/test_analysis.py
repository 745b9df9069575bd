"""Representation analysis: the Fourier spectrum finds planted frequencies, the cosine probe separates clusters, and a
real grokking run's checkpoints analyse end to end (scripts/analyze.py)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import ROOT, compose_cfg, fast_grok_run
from matplotlib.image import imread
from omegaconf import OmegaConf

from grokpipe.core.outputs import read_metrics
from grokpipe.results.analysis import (
    AnalysisError,
    analyze_run,
    check_fourier_task,
    class_cosine,
    fourier_basis,
    fourier_power,
    key_frequencies,
    list_checkpoints,
    read_analysis_csv,
    top_frequencies,
)

# one xdist worker runs the module (pytest -n, --dist loadgroup): the end-to-end tests share one grokking run
pytestmark = pytest.mark.xdist_group("analysis_grokked_run")

P = 59
FIGURES = ("spectrum.png", "fourier_share.png", "cosine.png", "cosine_matrix.png")


def planted_embedding(freqs: list[int], d: int = 32, noise: float = 0.01, seed: int = 0) -> torch.Tensor:
    """p x d embedding whose columns are random mixtures of cos and sin of the given frequencies, plus noise."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(P, dtype=torch.float64)
    waves = torch.stack([f(2 * math.pi * k * t / P) for k in freqs for f in (torch.cos, torch.sin)], dim=1)
    return waves @ torch.randn(waves.shape[1], d, generator=g, dtype=torch.float64) + noise * torch.randn(
        P, d, generator=g, dtype=torch.float64
    )


def test_fourier_basis_is_orthonormal():
    basis = fourier_basis(P)
    assert basis.shape == (P, P)
    assert torch.allclose(basis @ basis.T, torch.eye(P, dtype=torch.float64), atol=1e-10)


def test_powers_add_up_to_the_embedding_norm():
    w = torch.randn(P, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    power, total = fourier_power(w)
    constant = (w.sum(0) ** 2).sum() / P  # the k = 0 component is the only part the frequencies leave out
    assert power.shape == (P // 2,)
    assert float(power.sum() + constant) == pytest.approx(total, rel=1e-9)


def test_planted_frequencies_are_found():
    power, total = fourier_power(planted_embedding([5, 17]))
    keys, held = key_frequencies(power, total, share=0.7)
    assert keys == [5, 17] and held > 0.99
    tops, top_share = top_frequencies(power, total, 2)
    assert tops == [5, 17] and top_share > 0.99


def test_random_embedding_has_no_key_frequencies():
    w = torch.randn(P, 64, generator=torch.Generator().manual_seed(2))
    power, total = fourier_power(w)
    _, top_share = top_frequencies(power, total, 2)
    keys, held = key_frequencies(power, total, share=0.7)
    assert top_share < 0.2  # 2 of 29 frequencies hold about 2/29 of a white spectrum
    assert len(keys) > 15 and held >= 0.7


def test_s5_has_no_fourier_analysis():
    with pytest.raises(AnalysisError, match="s5"):
        check_fourier_task(compose_cfg(["task=s5"]))


def test_cosine_probe_separates_clusters():
    g = torch.Generator().manual_seed(3)
    n_classes, per_class, d = 6, 40, 32
    centres = torch.randn(n_classes, d, generator=g)
    labels = torch.arange(n_classes).repeat_interleave(per_class)
    feats = centres[labels] + 0.05 * torch.randn(len(labels), d, generator=g)
    probe = class_cosine(feats, labels, n_classes)
    assert probe.within > 0.99 and abs(probe.between) < 0.3
    assert torch.allclose(probe.matrix.diagonal(), torch.ones(n_classes), atol=1e-5)
    assert torch.allclose(probe.matrix, probe.matrix.T)

    shuffled = class_cosine(feats, labels[torch.randperm(len(labels), generator=g)], n_classes)
    assert shuffled.within < 0.3  # the same points under random labels: no class structure left


def test_cosine_probe_matches_brute_force():
    g = torch.Generator().manual_seed(4)
    feats = torch.randn(30, 5, generator=g)
    labels = torch.randint(0, 4, (30,), generator=g)
    unit = torch.nn.functional.normalize(feats.double(), dim=1)
    within = []
    for c in range(4):
        u = unit[labels == c]
        n = len(u)
        within.append(((u @ u.T).sum() - n) / (n * (n - 1)))
    means = torch.nn.functional.normalize(torch.stack([feats.double()[labels == c].mean(0) for c in range(4)]), dim=1)
    cos = means @ means.T
    between = (cos.sum() - cos.trace()) / 12
    probe = class_cosine(feats, labels, 4)
    assert probe.within == pytest.approx(float(torch.stack(within).mean()))
    assert probe.between == pytest.approx(float(between))


@pytest.fixture(scope="module")
def grokked_run(shared_dir) -> Path:
    """helpers.fast_grok_run: FAST_GROK through launch.py, a kept checkpoint every 200 epochs."""
    return fast_grok_run(shared_dir)


def nonblank(path: Path) -> bool:
    image = imread(path)
    return image.shape[0] > 200 and image.shape[1] > 200 and float(np.std(image[..., :3])) > 0.05


@pytest.mark.slow
def test_analyze_script_on_a_grokked_run(grokked_run):
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "analyze.py"), str(grokked_run)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = grokked_run / "analysis"
    rows = read_analysis_csv(out / "analysis.csv")
    checkpoints = list_checkpoints(grokked_run)
    assert len(checkpoints) >= 5 and [r["epoch"] for r in rows] == [e for e, _ in checkpoints]
    metrics = {r["epoch"]: r for r in read_metrics(grokked_run / "metrics.csv")}
    assert all(r["val_acc"] == pytest.approx(metrics[r["epoch"]]["val_acc"], rel=1e-5) for r in rows)
    for name in FIGURES:
        assert nonblank(out / name), name

    first, last = rows[0], rows[-1]
    assert first["val_acc"] < 0.1 and last["val_acc"] > 0.95
    # the circuit forms: a sparse spectrum (fewer frequencies hold the norm) and classes pull apart
    assert last["topk_share"] > first["topk_share"] + 0.2
    assert last["n_key"] < first["n_key"]
    assert last["within_cos"] - last["between_cos"] > first["within_cos"] - first["between_cos"] + 0.2


@pytest.mark.slow
def test_cosine_matrix_at_a_chosen_checkpoint(grokked_run):
    result = analyze_run(grokked_run, fourier=False, matrix_epoch=200)
    assert result.matrix_epoch == 200 and result.matrix.shape == (P, P)
    assert not result.spectra and "topk_share" not in result.rows[0]
    with pytest.raises(AnalysisError, match="no checkpoint"):
        analyze_run(grokked_run, matrix_epoch=201)


def test_analyze_script_refuses_s5_in_one_line(tmp_path):
    (tmp_path / ".hydra").mkdir()
    OmegaConf.save(compose_cfg(["task=s5"]), tmp_path / ".hydra" / "config.yaml")
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "analyze.py"), str(tmp_path)], capture_output=True, text=True
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the Fourier analysis needs a modular task")
