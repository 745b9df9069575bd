from __future__ import annotations

import os
import subprocess
import sys
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
