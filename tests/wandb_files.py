"""Read an offline W&B run back with `wandb leet inspect`, as a user would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def offline_runs(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "wandb").glob("offline-run-*"))


def _leet(run: Path, *flags: str) -> str:
    wandb_bin = Path(sys.executable).with_name("wandb")
    out = subprocess.run(
        [str(wandb_bin), "leet", "inspect", *flags, "--json", str(run)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return out.stdout


def summary(run: Path) -> dict:
    return json.loads(_leet(run, "--summary"))


def history(run: Path) -> list[dict]:
    records = [json.loads(line) for line in _leet(run).splitlines() if line.strip()]
    return [r["history"]["item"] for r in records if r["type"] == "history"]
