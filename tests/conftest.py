from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

# one torch thread in the tests and in every process they start: these models gain little from a second
# thread, and two threads on a loaded 2-core machine run several times slower than one
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

# a config that groks in seconds on a CPU: used wherever a test needs a real grokking run
FAST_GROK = [
    "model=mlp",
    "task.p=59",
    "optim.lr=3e-3",
    "train.max_epochs=3000",
    "train.patience=50",
    "logger=none",
    "train.plot=false",
    "train.print_every=0",
]


def compose_cfg(overrides: list[str] | None = None) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides or [])


@pytest.fixture
def cfg_factory():
    return compose_cfg


def without_elapsed(rows: list[dict]) -> list[dict]:
    """metrics.csv rows without the wall-clock column: what must be identical between two runs."""
    return [{k: v for k, v in r.items() if k != "elapsed"} for r in rows]


def start_run(args: list[str], run_dir: Path, env: dict | None = None) -> subprocess.Popen:
    """launch.py as a background process on `run_dir` (W&B offline), for a test to interrupt."""
    return subprocess.Popen(
        [sys.executable, str(ROOT / "launch.py"), *args, f"hydra.run.dir={run_dir}"],
        env={**os.environ, "WANDB_MODE": "offline", **(env or {})},
        cwd=run_dir.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_rows(path: Path, epoch: int, proc: subprocess.Popen | None = None, timeout: float = 120) -> None:
    """Until metrics.csv at `path` holds a row of `epoch` or later; fails if `proc` ends first."""
    from grokpipe.outputs import read_metrics

    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists() and (rows := read_metrics(path)) and rows[-1]["epoch"] >= epoch:
            return
        assert proc is None or proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise TimeoutError(f"{path} never reached epoch {epoch}")


def launch(args: list[str], cwd: Path, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run launch.py for real in a subprocess (outputs land under cwd)."""
    full_env = {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "offline"), **(env or {})}
    return subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
