"""LLC over a run's checkpoints (devinterp SGLD): the calibration grid, an estimate per checkpoint, the script, and the
one-line refusal without the llc extra."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import ROOT, compose_cfg, launch, needs_devinterp
from matplotlib.image import imread
from torch import nn

from grokpipe.results.analysis import list_checkpoints
from grokpipe.results.llc import (
    CALIBRATION_FIELDS,
    LLC_FIELDS,
    MISSING_EXTRA,
    Estimate,
    SGLDSettings,
    default_nbeta,
    estimate_run,
    trace_drift,
)

# one xdist worker runs the module (pytest -n, --dist loadgroup): the estimates share one training run
pytestmark = pytest.mark.xdist_group("llc_tiny_run")

TINY = [
    "model=mlp",
    "task.p=23",
    "model.d_model=16",
    "model.hidden=32",
    "optim.lr=3e-3",
    "train.max_epochs=300",
    "train.checkpoint_every=100",
    "train.patience=null",
    "logger=none",
    "train.plot=false",
    "train.print_every=0",
]
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # tiny steps: a second thread on a busy CPU only adds waiting
SMALL = ["--epsilons", "1e-3,3e-3", "--chains", "2", "--draws", "40", "--burnin", "20", "--batch-size", "64"]


def test_trace_drift_tells_a_ramp_from_noise():
    rng = np.random.default_rng(0)
    flat = list(10 + rng.normal(0, 1, 200))
    ramp = list(np.linspace(2, 10, 200) + rng.normal(0, 0.5, 200))
    drift, z = trace_drift(flat)
    assert abs(z) < 3 and drift < 0.1
    drift, z = trace_drift(ramp)
    assert z > 10 and drift > 0.5


def test_an_estimate_outside_the_basin_is_not_stable():
    flat = [5.0, 5.1, 4.9, 5.0, 5.05, 4.95]
    inside = Estimate(5.0, 0.1, 0.01, 0.11, flat, *trace_drift(flat))
    assert inside.stable(0.1, chance_loss=math.log(23))
    outside = Estimate(5.0, 0.1, 0.01, 3.5, flat, *trace_drift(flat))
    assert not outside.stable(0.1, chance_loss=math.log(23))
    assert not Estimate(-1.0, 0.1, 0.01, 0.0, flat, *trace_drift(flat)).stable(0.1, math.log(23))


def test_script_without_the_extra_refuses_in_one_line(tmp_path):
    # devinterp made unimportable in this interpreter, as on an install without the extra
    code = (
        "import runpy, sys; sys.modules['devinterp'] = None; "
        f"sys.argv = ['llc.py', {str(tmp_path)!r}]; runpy.run_path({str(ROOT / 'scripts' / 'llc.py')!r}, "
        "run_name='__main__')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {MISSING_EXTRA}"]
    assert MISSING_EXTRA == "the LLC needs the llc extra: pip install -e '.[llc]'"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    needs_devinterp()
    tmp = tmp_path_factory.mktemp("llc")
    result = launch([*TINY, f"hydra.run.dir={tmp}/run"], cwd=tmp, env=ONE_THREAD, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return tmp / "run"


def test_llc_per_checkpoint(tiny_run):
    base = SGLDSettings(epsilon=1e-3, nbeta=1.0, num_chains=2, num_draws=40, num_burnin=20, batch_size=64)
    result = estimate_run(tiny_run, base, epsilons=[1e-3, 3e-3])
    epochs = [e for e, _ in list_checkpoints(tiny_run)]
    assert epochs == [100, 200, 300]
    assert [r["epoch"] for r in result.rows] == epochs
    for r in result.rows:
        assert math.isfinite(r["llc_mean"]) and math.isfinite(r["llc_std"]) and r["llc_std"] >= 0
        assert r["train_loss"] is not None and r["val_loss"] is not None
    cal = result.calibration
    assert len(cal.rows) == 2 * 3 * 2  # epsilons x default nβ and its third and triple x first and last checkpoint
    nb0 = default_nbeta(64)
    assert sorted({r["nbeta"] for r in cal.rows}) == pytest.approx([nb0 / 3, nb0, 3 * nb0])
    assert (result.settings.epsilon, result.settings.nbeta) == (cal.epsilon, cal.nbeta)
    assert cal.stable  # seeded chains: this grid holds stable cells, and the chosen one is stable on both checkpoints
    chosen = [r for r in cal.rows if (r["epsilon"], r["nbeta"]) == (cal.epsilon, cal.nbeta)]
    assert len(chosen) == 2 and all(r["stable"] for r in chosen)
    # the smallest ε stable on both checkpoints at that nβ
    unstable = {r["epsilon"] for r in cal.rows if r["nbeta"] == cal.nbeta and not r["stable"]}
    assert cal.epsilon == min({r["epsilon"] for r in cal.rows} - unstable)


def test_llc_script_writes_tables_and_figures(tiny_run, tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "llc.py"), str(tiny_run), "--out", str(tmp_path), *SMALL],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **ONE_THREAD},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("calibrated: epsilon=")
    llc_lines = (tmp_path / "llc.csv").read_text().splitlines()
    assert llc_lines[0] == ",".join(LLC_FIELDS) and len(llc_lines) == 1 + 3
    assert all(math.isfinite(float(line.split(",")[1])) for line in llc_lines[1:])
    cal_lines = (tmp_path / "calibration.csv").read_text().splitlines()
    assert cal_lines[0] == ",".join(CALIBRATION_FIELDS) and len(cal_lines) == 1 + 12
    for name in ("llc.png", "calibration.png"):
        image = imread(tmp_path / name)
        assert image.shape[0] > 200 and float(np.std(image[..., :3])) > 0.05, name


def test_llc_script_refuses_bad_values(tiny_run):
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "llc.py"), str(tiny_run), "--draws", "2"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and result.stderr.strip() == "error: --draws=2 is too small"


class _Linear(nn.Module):
    """f(x) = w.x: regular, d parameters, so its learning coefficient is d/2."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x @ self.w)[:, None]


class _Product(nn.Module):
    """f(x) = (a * b).x: 2k parameters, but at a minimum with every a_i b_i != 0 the loss is flat along k of them
    (a_i -> t a_i, b_i -> b_i / t): minimally singular, learning coefficient k/2 = d/4, below d/2."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor) -> None:
        super().__init__()
        self.a, self.b = nn.Parameter(a.clone()), nn.Parameter(b.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x @ (self.a * self.b))[:, None]


@pytest.mark.slow
def test_the_estimate_through_the_calibration_path_recovers_known_coefficients():
    """Least squares with Gaussian noise, at its minimum, estimated as scripts/llc.py does (calibrate the ε grid at
    devinterp's nβ; the estimate of the cell it chooses), under grokpipe's MSE: the regular model's coefficient is
    d/2 = 2 and the product model's k/2 = 2 though it has d = 8 parameters (d/2 = 4). Tolerance 0.6: the estimate's
    spread over 4 chains of 600 draws is about 0.2 (measured 1.98 and 2.10 with 2 chains, chain std 0.36 and 0.21)."""
    needs_devinterp()
    from grokpipe.losses import build_loss
    from grokpipe.results.llc import SGLDSettings, calibrate, default_nbeta

    torch.manual_seed(0)
    n, k = 500, 4
    x = torch.randn(n, k)
    y = (x @ torch.randn(k) + 0.1 * torch.randn(n))[:, None]
    w_star = torch.linalg.lstsq(x, y).solution[:, 0]
    loss = build_loss(compose_cfg(["task=frac_x", "loss=mse"]).loss)
    nbeta = default_nbeta(n)
    base = SGLDSettings(epsilon=3e-4, nbeta=nbeta, localization=1.0, num_chains=4, num_draws=600, num_burnin=400,
                        batch_size=n)  # fmt: skip
    found = {}
    for name, model in {"linear": _Linear(w_star), "product": _Product(torch.ones(k), w_star)}.items():
        cal = calibrate({0: model}, x, y, base, [3e-4, 1e-3], [nbeta], float(y.var()), loss)
        found[name] = next(r["llc_mean"] for r in cal.rows if r["epsilon"] == cal.epsilon)  # the cell it chose
    # the posterior localised at w* is Gaussian here: E[nβ ΔL] = Σ nβ c / (2 nβ c + γ) ≈ k/2 (c ≈ 1, γ = 1)
    assert found["linear"] == pytest.approx(k / 2, abs=0.6), found
    assert found["product"] == pytest.approx(k / 2, abs=0.6), found
    assert found["product"] < 0.75 * (2 * k) / 2  # well below d/2 of its 2k parameters
