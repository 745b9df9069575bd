"""Seed 004's way of training, end to end on a tiny frac_x run: a budget in optimizer steps on random batches, what
the files, checkpoints, resume, packs and results database make of it, and the LLC over its checkpoints."""

from __future__ import annotations

import math
import shutil
import sqlite3

import pytest
from helpers import compose_cfg, needs_devinterp, script, without_elapsed
from omegaconf import OmegaConf

from grokpipe.core.checkpoint import load_checkpoint
from grokpipe.core.errors import ConfigError
from grokpipe.core.outputs import read_metrics
from grokpipe.losses import build_loss
from grokpipe.results.analysis import list_checkpoints
from grokpipe.results.database import build
from grokpipe.results.llc import LLC_BASE_FIELDS, SGLDSettings, calibration_ends, chance_loss, estimate_run, plot_llc
from grokpipe.run.train import run
from grokpipe.run.train import train as train_packed
from grokpipe.tasks import build_task

# one xdist worker runs the module (pytest -n, --dist loadgroup): its tests share one run in steps
pytestmark = pytest.mark.xdist_group("steps_tiny_run")

# 96 sequences (29 to train on), a 16-wide causal transformer, 40 steps of 16 samples each
STEPS = [
    "task=frac_x",
    "model=causal_transformer",
    "loss=mse",
    "optim=adam",
    "optim.lr=0.01",
    "optim.warmup_steps=0",
    "task.n_samples=96",
    "model.d_model=16",
    "model.hidden_size=16",
    "train.max_epochs=null",
    "train.max_steps=40",
    "train.batch_size=16",
    "train.eval_every=10",
    "train.checkpoint_every=10",
    "train.latest_every=10",
    "train.patience=null",
    "logger=none",
    "train.plot=false",
    "train.print_every=0",
]


@pytest.fixture(scope="module")
def steps_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("steps")
    cfg = compose_cfg(STEPS)
    (root / "run" / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, root / "run" / ".hydra" / "config.yaml")  # as launch.py's Hydra does: what scripts read
    return root / "run", run(cfg, root / "run")


def test_a_run_in_steps_counts_optimizer_steps_on_random_batches(steps_run):
    run_dir, summary = steps_run
    rows = read_metrics(run_dir / "metrics.csv")
    assert [r["epoch"] for r in rows] == [10, 20, 30, 40]
    assert {"train_loss", "val_loss", "train_mae", "val_mae"} <= set(rows[0])
    assert not {"train_acc", "fourier_gini", "sc_share", "restricted_loss"} & set(rows[0])
    assert (summary["unit"], summary["max_steps"], summary["max_epochs"], summary["epochs_run"]) == (
        "steps",
        40,
        None,
        40,
    )
    assert summary["criterion"] == "generalised: val_mae <= 0.02; memorised: train_mae <= 0.02"
    assert summary["final_val_mae"] == pytest.approx(rows[-1]["val_mae"], rel=1e-5)
    assert summary["ratio"] == pytest.approx(16 / 26)
    assert summary["loss"] == "mse" and summary["p"] is None and summary["batch_size"] == 16
    names = sorted(p.name for p in (run_dir / "checkpoints").glob("epoch_*.pt"))
    assert names == [f"epoch_{s:07d}.pt" for s in (10, 20, 30, 40)]
    last = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert last["epoch"] == 40 and last["optimizer"]["steps"] == 40  # one optimizer step per iteration
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]


def test_a_run_in_steps_resumes_exactly(steps_run, tmp_path):
    run_dir, straight = steps_run
    run(compose_cfg([*STEPS, "train.max_steps=20"]), tmp_path)
    resumed = run(compose_cfg(STEPS), tmp_path)  # the larger budget resumes from step 20's checkpoint
    assert without_elapsed(read_metrics(tmp_path / "metrics.csv")) == without_elapsed(
        read_metrics(run_dir / "metrics.csv")
    )
    assert resumed["final_val_mae"] == straight["final_val_mae"]


def test_a_checkpoint_in_epochs_is_not_resumed_in_steps(tmp_path):
    run(compose_cfg([*STEPS, "train.max_steps=null", "train.max_epochs=1"]), tmp_path)
    unit = "holds a run of another config \\(train\\.unit: absent there, 'steps' here\\)"
    with pytest.raises(ConfigError, match=unit):
        run(compose_cfg(STEPS), tmp_path)


def test_pack_members_in_steps_train_as_they_would_alone(steps_run, tmp_path):
    run_dir, alone = steps_run
    other = run(compose_cfg([*STEPS, "train.seed=1"]), tmp_path / "alone1")
    packed = train_packed(
        [compose_cfg(STEPS), compose_cfg([*STEPS, "train.seed=1"])], [tmp_path / "p0", tmp_path / "p1"]
    )
    for p, s in zip(packed, (alone, other)):
        assert (p["unit"], p["epochs_run"]) == ("steps", 40)
        for key in ("final_train_loss", "final_val_loss", "final_val_mae"):
            assert p[key] == pytest.approx(s[key], rel=1e-3), key


def test_the_results_database_holds_its_unit_and_mae(steps_run):
    run_dir, summary = steps_run
    report = build(run_dir.parent, run_dir.parent / "results.db")
    con = sqlite3.connect(report.db_path)
    unit, max_steps, val_mae, task = con.execute("SELECT unit, max_steps, final_val_mae, op FROM runs").fetchone()
    assert (unit, max_steps, task) == ("steps", 40, "frac_x") and val_mae == pytest.approx(summary["final_val_mae"])
    steps = [r[0] for r in con.execute("SELECT epoch FROM metrics WHERE train_mae IS NOT NULL ORDER BY epoch")]
    assert steps == [10, 20, 30, 40]


def test_llc_over_a_run_in_steps_under_its_mse(steps_run, tmp_path):
    needs_devinterp()
    run_dir, _ = steps_run
    cfg = compose_cfg(STEPS)
    data = build_task(cfg.task).split()
    guess = chance_loss(build_task(cfg.task).spec, data.train_y)
    assert guess == pytest.approx(float(data.train_y.double().var(0, unbiased=False).mean()))
    base = SGLDSettings(epsilon=1e-4, nbeta=2.0, localization=5.0, num_chains=1, num_draws=16, num_burnin=0)
    result = estimate_run(run_dir, base, epsilons=[1e-4, 1e-3], nbetas=[2.0], every=2)
    assert [r["epoch"] for r in result.rows] == [10, 30, 40]  # every 2nd from the first, and the last
    assert result.fields == (*LLC_BASE_FIELDS, "train_mae", "val_mae") and result.count == "step"
    assert all(math.isfinite(r["llc_mean"]) and r["val_mae"] is not None for r in result.rows)
    assert {r["epoch"] for r in result.calibration.rows} == {10, 40}
    assert [p.name for p in plot_llc(result, tmp_path)] == ["llc.png", "llc_metric.png", "calibration.png"]
    twin = tmp_path / "twin"  # a second run: the script's figure of several runs
    shutil.copytree(run_dir, twin)
    out = tmp_path / "script"
    args = [str(run_dir), str(twin), "--out", str(out), "--epsilons", "1e-4", "--nbetas", "2", "--chains", "1"]
    assert script("llc").main([*args, "--draws", "16", "--burnin", "0", "--localization", "5", "--every", "3"]) == 0
    for name in ("run", "twin"):
        lines = (out / name / "llc.csv").read_text().splitlines()
        assert lines[0] == ",".join(result.fields) and [int(line.split(",")[0]) for line in lines[1:]] == [10, 40]
    assert (out / "llc_runs.png").stat().st_size > 10_000


def test_the_probes_refuse_real_targets_in_one_line(steps_run, capsys):
    run_dir, _ = steps_run
    assert script("analyze").main([str(run_dir)]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: the cosine probe and the Fourier spectrum need class labels; task 'frac_x' has real targets "
        "(scripts/llc.py reads any run)"
    )


def test_calibration_starts_from_checkpoints_below_chance(steps_run):
    run_dir, _ = steps_run
    cfg = compose_cfg(STEPS)
    task = build_task(cfg.task)
    data = task.split()
    checkpoints = list_checkpoints(run_dir)
    losses = {r["epoch"]: r["train_loss"] for r in read_metrics(run_dir / "metrics.csv")}
    ordered = sorted(losses.values())
    # half the checkpoints above it, half below, none at it: a guess equal to one checkpoint's loss would leave that
    # checkpoint's side to the last bit of float order (metrics.csv's evaluation against calibration's forward)
    guess = (ordered[len(ordered) // 2 - 1] + ordered[len(ordered) // 2]) / 2
    below = [e for e in sorted(losses) if losses[e] < guess]
    loss = build_loss(cfg.loss)
    ends = calibration_ends(cfg, task.spec, checkpoints, data.train_x, data.train_y, loss, guess)
    assert set(ends) == {below[0], below[-1]}
    none = calibration_ends(cfg, task.spec, checkpoints, data.train_x, data.train_y, loss, 0.0)
    assert set(none) == {10, 40}  # none below chance: the first and the last
