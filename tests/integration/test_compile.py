"""train.compile: a compiled run trains bit for bit again (from a warm cache too), and auto compiles only where the
budget repays a cold compile, on a CPU with a C++ compiler."""

from __future__ import annotations

import torch
from helpers import compose_cfg, needs_compiler, without_elapsed

from grokpipe.config.validate import COMPILE_MIN_BUDGET, Machine, choose_compile, prepare
from grokpipe.core.outputs import read_metrics
from grokpipe.run.train import COMPILE_CACHE, train

TINY = ["task.p=11", "model.d_model=8", "train.max_epochs=20", "logger=none", "train.plot=false", "train.threads=1"]


def _weights(run_dir):
    return torch.load(run_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)["model"]


def test_a_compiled_run_re_runs_bit_for_bit_from_its_sweeps_cache(tmp_path, monkeypatch):
    needs_compiler()
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    sweep = tmp_path / "sw"
    dirs = [sweep / "0", sweep / "1", tmp_path / "eager"]
    for run_dir, how in zip(dirs, ("always", "always", "never")):
        monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
        train([compose_cfg([*TINY, f"train.compile={how}"])], [run_dir], str(sweep) if how == "always" else None)
    a, b, eager = (without_elapsed(read_metrics(d / "metrics.csv")) for d in dirs)
    assert a == b and len(a) == 2
    wa, wb, we = (_weights(d) for d in dirs)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert any((sweep / COMPILE_CACHE).rglob("*")), "the sweep's cells share an on-disk cache in the sweep dir"
    assert not all(torch.equal(wa[k], we[k]) for k in wa)  # compiled code rounds otherwise: it really ran compiled


def test_compile_auto_follows_the_budget_the_work_the_device_and_the_compiler(monkeypatch):
    cpu, gpu = Machine("cpu"), Machine("cuda")

    def resolved(budget: int, machine, *more) -> str:
        cfg = compose_cfg(["train.compile=auto", f"train.max_epochs={budget}", "logger=none", *more])
        return choose_compile(cfg, machine, budget)

    narrow = ["task.p=97", "model.d_model=8"]  # 1.46x compiled: pays
    assert resolved(COMPILE_MIN_BUDGET, cpu, *narrow) == "always"
    assert resolved(COMPILE_MIN_BUDGET - 1, cpu, *narrow) == "never"
    assert resolved(20000, cpu, "task.p=97", "model.d_model=128") == "never"  # 0.98x: matmul-bound
    assert resolved(20000, cpu, "task.p=113", "model.d_model=128") == "never"  # beyond every measured work
    assert resolved(20000, cpu, *narrow, "model=mlp") == "never"  # not measured compiled
    assert resolved(20000, gpu, *narrow) == "never" and resolved(20000, None, *narrow) == "auto"  # machine unknown
    monkeypatch.setattr("shutil.which", lambda name: None)
    assert resolved(20000, cpu, *narrow) == "never"  # no C++ compiler on PATH
    run = prepare(compose_cfg(["train.compile=auto", "train.max_epochs=100", "logger=none"]), cpu)
    assert run.compile == "never" and run.cfg.train.compile == "never"
