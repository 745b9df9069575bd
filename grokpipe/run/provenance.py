"""What produced a run: code, environment, device, determinism settings and the command line.

`collect(device, precision)` reads it (once per process for what cannot change within one); `record(run_dir, ...)`
writes it into the run dir as provenance.json at the run's first start and, on a resume, adds an entry under
`resumes` naming what differs from the start (another commit, versions or device). The same dict goes into
summary.json, the W&B run config and the results database (`grokpipe.results.database`). Nothing from the environment
is read but the whitelisted names below; arguments whose key names a secret are masked.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import socket
import subprocess
import sys
import time
from functools import cache
from importlib import metadata
from pathlib import Path

import torch

from grokpipe.core import __version__
from grokpipe.core.outputs import write_summary
from grokpipe.core.secrets import mask_args

PROVENANCE = "provenance.json"
PACKAGES = ("torch", "numpy", "hydra-core", "omegaconf", "submitit", "hydra-submitit-launcher", "wandb", "matplotlib")
# CPU flags that change which kernels run (and so the bits of the result)
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "neon", "asimd")
# environment variables that change numerics, threads or scheduling; nothing else from the environment is read
ENV_KEYS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "CUBLAS_WORKSPACE_CONFIG",
    "CUDA_VISIBLE_DEVICES",
    "SLURM_JOB_ID",
    "SLURM_ARRAY_JOB_ID",
    "SLURM_ARRAY_TASK_ID",
    "SLURM_CLUSTER_NAME",
)
# what a re-run's provenance is compared on (the rest, time and host, differ by nature)
COMPARED = (
    "grokpipe_version",
    "commit",
    "dirty",
    "python",
    "packages",
    "device_name",
    "cpu_flags",
    "threads",
    "precision",
    "determinism",
)


@cache
def source_state() -> tuple[str | None, bool | None]:
    """The commit of the grokpipe checkout this process imported, and whether its tracked files differ from it.
    (None, None) for an install without git metadata; GROKPIPE_COMMIT (set by the Docker build) names it then."""
    root = Path(__file__).resolve().parents[2]  # grokpipe/run/provenance.py -> the checkout
    git = ["git", "-C", str(root)]
    try:
        commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            raise OSError(commit.stderr)
        status = subprocess.run(
            [*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=10
        )
        return commit.stdout.strip(), bool(status.stdout.strip()) if status.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("GROKPIPE_COMMIT") or None, None


@cache
def cpu_info() -> tuple[str, tuple[str, ...]]:
    """The CPU's model name and the flags of CPU_FLAGS it has (Linux /proc/cpuinfo; the platform's name elsewhere)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and model in ("", platform.machine(), platform.processor()):
                model = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return model, tuple(f for f in CPU_FLAGS if f in flags)


def _packages() -> dict[str, str | None]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _gpu(device: torch.device) -> dict:
    if device.type != "cuda":
        return {}
    props = torch.cuda.get_device_properties(device)
    driver = None
    try:
        query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader", f"--id={device.index or 0}"]
        out = subprocess.run(query, capture_output=True, text=True, timeout=10)
        driver = out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "gpu_name": props.name,
        "gpu_capability": f"{props.major}.{props.minor}",
        "gpu_driver": driver,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
    }


def determinism() -> dict:
    """The settings the bits of a run depend on, as they stand in this process."""
    return {
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    }


def command(run_dir: Path) -> str | None:
    """The command that re-runs this run: launch.py with the overrides Hydra recorded for it."""
    overrides = Path(run_dir) / ".hydra" / "overrides.yaml"
    if not overrides.exists():
        return None
    import yaml  # the overrides as written: an interpolation (task.split_seed=${train.seed}) is text here, not resolved

    args = mask_args([str(a) for a in yaml.safe_load(overrides.read_text()) or []])
    return " ".join(["python", "launch.py", *map(shlex.quote, args)])


def collect(run_dir: Path, device: torch.device, precision: str) -> dict:
    """This process's provenance for a run in `run_dir` on `device`."""
    commit, dirty = source_state()
    cpu_model, flags = cpu_info()
    gpu = _gpu(device)
    return {
        "grokpipe_version": __version__,
        "commit": commit,
        "dirty": dirty,
        "python": platform.python_version(),
        "packages": _packages(),
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "device": str(device),
        "device_name": gpu.get("gpu_name") or cpu_model,
        "cpu_model": cpu_model,
        "cpu_flags": list(flags),
        **gpu,
        "threads": torch.get_num_threads(),
        "precision": precision,
        "determinism": determinism(),
        "env": {k: os.environ[k] for k in ENV_KEYS if k in os.environ},
        "command": command(run_dir),
        "argv": mask_args([sys.executable, *sys.argv]),
        "cwd": os.getcwd(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def differences(a: dict, b: dict) -> dict[str, tuple]:
    """What differs between two provenances, key by key (packages by name): {key: (a's, b's)}."""
    out = {}
    for key in COMPARED:
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            out.update({f"{key}.{k}": (x.get(k), y.get(k)) for k in sorted(set(x) | set(y)) if x.get(k) != y.get(k)})
        elif x != y:
            out[key] = (x, y)
    return out


def read(run_dir: Path) -> dict | None:
    """A run dir's provenance.json (None if it has none or it does not parse)."""
    try:
        return json.loads((Path(run_dir) / PROVENANCE).read_text())
    except (OSError, ValueError):
        return None


def record(run_dir: Path, device: torch.device, precision: str, start_epoch: int) -> dict:
    """Write provenance.json at a run's first start; on a resume, add what differs to its `resumes`.
    Returns the run's provenance: the start's, with the resumes."""
    path = Path(run_dir) / PROVENANCE
    now = collect(run_dir, device, precision)
    first = read(run_dir) if start_epoch else None
    if first is None:
        first = {**now, "resumes": []}
    else:
        first.setdefault("resumes", []).append(
            {
                "epoch": start_epoch,
                "started": now["started"],
                "host": now["host"],
                "differs": {k: list(v) for k, v in differences(first, now).items()},
            }
        )
    write_summary(path, first)
    return first
