"""What the tests share: real configs, real runs of launch.py and the scripts, offline W&B files read back, the
results sweeps and the SLURM probe. Fixtures live in the conftest.py files; test modules import from here only
(`tests/` is on sys.path: pytest puts it there for tests/conftest.py)."""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

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

# --- configs and runs -------------------------------------------------------------------------------------------


def compose_cfg(overrides: list[str] | None = None) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides or [])


def without_elapsed(rows: list[dict]) -> list[dict]:
    """metrics.csv rows without the wall-clock column: what must be identical between two runs."""
    return [{k: v for k, v in r.items() if k != "elapsed"} for r in rows]


def checked_rows(path: Path, epochs: list[int] | None = None) -> list[dict]:
    """metrics.csv read back strictly: every raw line is its header or a parsed row (nothing torn, nothing dropped),
    epochs unique and evenly spaced from the first evaluation, and equal to `epochs` when given."""
    from grokpipe.core.outputs import read_metrics

    lines = path.read_text().splitlines()
    rows = read_metrics(path)
    assert len(lines) == len(rows) + 1, f"{path}: {len(lines)} lines for {len(rows)} rows and a header"
    got = [r["epoch"] for r in rows]
    assert len(set(got)) == len(got), f"{path}: repeated epochs in {got}"
    if len(got) > 1:
        step = got[0]
        assert got == list(range(step, got[-1] + 1, step)), f"{path}: epochs not contiguous: {got}"
    if epochs is not None:
        assert got == epochs, f"{path}: epochs {got}, expected {epochs}"
    return rows


def assert_same_rows(path: Path, reference: list[dict]) -> list[dict]:
    """metrics.csv at `path` is whole (checked_rows) and, elapsed aside, identical to an uninterrupted run's rows."""
    rows = checked_rows(path, [r["epoch"] for r in reference])
    assert without_elapsed(rows) == without_elapsed(reference)
    return rows


def file_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under `root`, by relative path: what a rerun must leave unchanged."""
    import hashlib

    return {
        str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(root.rglob("*"))
        if f.is_file()
    }


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
    from grokpipe.core.outputs import read_metrics

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


def script(name: str):
    """A script of scripts/ as a module, so tests can call its main() in this process."""
    spec = importlib.util.spec_from_file_location(f"script_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_script(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / f"{name}.py"), *map(str, args)], capture_output=True, text=True
    )


# --- W&B offline files, read back with `wandb leet inspect` as a user would -------------------------------------


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


# --- the results sweeps: what the results database, figures and predict tests read ------------------------------

TINY = ["model=mlp", "task.p=23", "train.max_epochs=60", "logger=none", "train.print_every=0", "train.plot=false"]
TINY_GRID = ["model.d_model=8,16", "optim.wd=0.1,1", "train.seed=0,1"]
# FAST_GROK at a higher lr and no patience: groks by epoch ~600 with val acc 1.0, in a third of the time
GROK = [o for o in FAST_GROK if not o.startswith(("optim.lr=", "train.patience="))] + [
    "optim.lr=1e-2",
    "train.patience=0",
]
# seeds 2 and 3 grok at different epochs; the cells of seeds 4 and 5 fail at run time, each finding a directory
# where its metrics.csv goes (make_results puts it there)
GROK_GRID = ["train.seed=2,3,4,5", "+logger.group=fast_grok"]
FAILING_CELLS = (2, 3)


def make_results(root: Path) -> Path:
    """Two real sweeps under `root`/multirun (tiny: 8 cells; grok: 4 cells, 2 of them failing), made once: a
    second caller, in this process or another (an xdist worker), waits on the lock and finds them made."""
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f"{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (root / ".made").exists():
            return root
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir()
        for cell in FAILING_CELLS:
            (root / "multirun" / "grok" / str(cell) / "metrics.csv").mkdir(parents=True)
        sweeps = [
            [
                "-m",
                *TINY,
                *TINY_GRID,
                "hydra/launcher=local",
                "hydra.sweeper.pack=true",
                f"hydra.sweep.dir={root}/multirun/tiny",
            ],
            ["-m", *GROK, *GROK_GRID, "hydra/launcher=local", f"hydra.sweep.dir={root}/multirun/grok"],
        ]
        with ThreadPoolExecutor(2) as pool:
            done = list(pool.map(lambda args: launch(args, cwd=root), sweeps))
        assert done[0].returncode == 0, done[0].stderr[-3000:]
        assert done[1].returncode == 1, done[1].stderr[-3000:]  # the failing cells fail, as intended
        (root / ".made").touch()
    return root


def run_once(root: Path, name: str, args: list[str], env: dict | None = None) -> Path:
    """`python launch.py <args>` into `root`/name/run, made once: the tests that compare against the same run (on
    any xdist worker, `root` being shared_dir) wait on the lock and read the one run. Returns its run dir."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        run_dir = root / name / "run"
        if (root / name / ".made").exists():
            return run_dir
        shutil.rmtree(root / name, ignore_errors=True)
        (root / name).mkdir()
        result = launch([*args, f"hydra.run.dir={run_dir}"], cwd=root / name, env=env)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        (root / name / ".made").touch()
    return run_dir


def fast_grok_run(root: Path) -> Path:
    """FAST_GROK through launch.py, a kept checkpoint every 200 epochs, made once (run_once): the grokking run that
    test_train checks and test_analysis analyses. One thread: on a busy CPU a second one only waits on the first for
    these tiny matmuls."""
    return run_once(root, "fast_grok", [*FAST_GROK, "train.checkpoint_every=200"], {"OMP_NUM_THREADS": "1"})


# --- SLURM ------------------------------------------------------------------------------------------------------


def needs_devinterp():
    """devinterp (the llc extra, in requirements.lock): skip without it, except under CI, where it is a failure."""
    try:
        import devinterp
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("devinterp is not installed: the lock pins it (the llc extra), so CI runs the LLC tests")
        pytest.skip("devinterp is not installed (pip install -e '.[llc]')")
    return devinterp


def needs_compiler() -> None:
    """A C++ compiler for train.compile (inductor): skip without one, except under CI, where it is a failure
    (.ci/run installs g++)."""
    from grokpipe.config.validate import COMPILERS

    if not any(shutil.which(c) for c in COMPILERS):
        if os.environ.get("CI"):
            pytest.fail(f"no C++ compiler ({', '.join(COMPILERS)}) on PATH: .ci/run installs g++, CI compiles for real")
        pytest.skip(f"no C++ compiler ({', '.join(COMPILERS)}) on PATH")


def cluster_answers() -> bool:
    """Whether a SLURM controller answers with a usable node (scripts/slurm_up.sh starts one)."""
    if not shutil.which("sinfo"):
        return False
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20).stdout
    except subprocess.TimeoutExpired:
        return False
    return any(s.strip("*~#") in ("idle", "mixed", "allocated", "completing") for s in out.split())
