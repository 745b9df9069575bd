"""W&B runs offline with no credentials; what it logged is read back from the offline files."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers import FAST_GROK, ROOT, history, launch, offline_runs, summary

from grokpipe.core.outputs import read_metrics
from grokpipe.core.secrets import scrub
from grokpipe.loggers.wandb_run import choose_mode


def _no_credentials(tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    return {**env, "HOME": str(tmp_path), "NETRC": str(tmp_path / "none")}


@pytest.mark.slow
def test_offline_run_holds_logged_metrics_and_summary(tmp_path):
    run_dir = tmp_path / "run"
    args = [a for a in FAST_GROK if not a.startswith("logger")] + ["logger=wandb", f"hydra.run.dir={run_dir}"]
    env = _no_credentials(tmp_path)
    result = subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "warning: W&B" not in result.stderr
    (run,) = offline_runs(run_dir)
    local = json.loads((run_dir / "summary.json").read_text())
    rows = read_metrics(run_dir / "metrics.csv")

    logged = history(run)
    assert [h["epoch"] for h in logged] == [r["epoch"] for r in rows]
    assert [h["_step"] for h in logged] == [r["epoch"] for r in rows]  # the epoch is the step
    for h, r in zip(logged, rows):
        assert h["val_acc"] == pytest.approx(r["val_acc"], abs=1e-5)
        assert h["train_loss"] == pytest.approx(r["train_loss"], rel=1e-5)
        for k in ("fourier_gini", "embed_erank", "sc_share", "restricted_loss", "excluded_loss"):  # same step
            assert h[k] == pytest.approx(r[k], rel=1e-5, abs=1e-9), k

    s = summary(run)
    assert s["state"] == "finished"
    assert s["summary"]["grok_epoch"] == local["grok_epoch"] and local["grokked"]
    assert s["summary"]["status"] == "grokked"
    assert s["summary"]["crossed"] == local["crossed"] and s["summary"]["hidden_progress"] == local["hidden_progress"]
    assert s["config"]["ratio"] == pytest.approx(local["ratio"])
    assert s["config"]["task"]["p"] == 59 and s["config"]["optim"]["lr"] == 3e-3
    prov = local["provenance"]  # what produced the run, in the run's W&B config as in summary.json
    assert s["config"]["provenance"]["commit"] == prov["commit"] and prov["commit"]
    assert s["config"]["provenance"]["packages"] == prov["packages"]
    assert s["config"]["provenance"]["determinism"] == prov["determinism"]


def test_no_key_means_offline_and_env_wins(tmp_path, monkeypatch):
    for k in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "missing"))
    assert choose_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert choose_mode("auto") == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert choose_mode("auto") == "disabled"


def test_secret_never_reaches_the_run_files(tmp_path):
    secret = "k" * 12 + "f00dfeedc0ffee" + "z" * 14
    run_dir = tmp_path / "run"
    env = {"WANDB_API_KEY": secret, "WANDB_MODE": "offline", "HOME": str(tmp_path)}
    result = launch(
        ["task.p=23", "train.max_epochs=20", "train.print_every=0", f"hydra.run.dir={run_dir}"], cwd=tmp_path, env=env
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert secret not in result.stdout + result.stderr
    (run,) = offline_runs(run_dir)
    assert summary(run)["state"] == "finished"
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert len(files) > 10
    for path in files:
        assert secret.encode() not in path.read_bytes(), path


def test_secret_in_the_config_is_refused(tmp_path):
    result = launch(["+logger.api_key=abc", f"hydra.run.dir={tmp_path}/run"], cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: logger.api_key is not allowed: secrets come from the environment "
        "(e.g. WANDB_API_KEY), never from the config"
    )


def test_scrub_drops_secret_keys_at_any_depth():
    cfg = {"logger": {"api_key": "s", "project": "p", "nested": {"TOKEN": "t", "ok": 1}}, "password": "x"}
    assert scrub(cfg) == {"logger": {"project": "p", "nested": {"ok": 1}}}


def test_every_packed_member_has_its_own_live_run(tmp_path):
    """A packed sweep: one process trains three cells, each logs to its own W&B run, side by side."""
    sweep = tmp_path / "sw"
    tiny = ["model=mlp", "task.p=23", "train.max_epochs=60", "train.print_every=0", "train.plot=false"]
    args = [*tiny, "logger=wandb", "train.seed=0,1,2", "hydra.sweeper.pack=true", f"hydra.sweep.dir={sweep}"]
    result = subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), "-m", *args],
        cwd=tmp_path,
        env=_no_credentials(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "warning: W&B" not in result.stderr
    groups = set()
    for cell in range(3):
        (run,) = offline_runs(sweep / str(cell))
        rows = read_metrics(sweep / str(cell) / "metrics.csv")
        logged = history(run)
        assert [h["_step"] for h in logged] == [r["epoch"] for r in rows] == list(range(10, 61, 10))
        assert [h["train_loss"] for h in logged] == pytest.approx([r["train_loss"] for r in rows], rel=1e-5)
        s = summary(run)
        assert s["state"] == "finished" and s["summary"]["status"] == "completed"
        assert s["config"]["train"]["seed"] == cell
        assert s["run_id"] == (sweep / str(cell) / "wandb_id.txt").read_text().strip()
        groups.add(s["config"]["logger"]["group"])
    assert groups == {f"sweep-{sweep.parent.name}_sw"}
