"""Real trainings on the CPU: every model steps, runs are reproducible, resumable, and a small run groks."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import ROOT, compose_cfg, fast_grok_run, launch, without_elapsed

from grokpipe.config.validate import part_class
from grokpipe.core.checkpoint import load_checkpoint
from grokpipe.core.outputs import METRIC_FIELDS, read_metrics
from grokpipe.losses import build_loss
from grokpipe.models import build_model
from grokpipe.optim import build_optimizer
from grokpipe.run.stack import make_stack
from grokpipe.run.train import run
from grokpipe.tasks import build_task

SHORT = [
    "task.p=23",
    "train.max_epochs=60",
    "train.eval_every=10",
    "logger=none",
    "train.plot=false",
    "train.print_every=0",
    "train.latest_every=20",
    "train.checkpoint_every=30",
]


OPTIONS = {group: sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml")) for group in ("model", "optim")}


def _task_for(model: str) -> list[str]:
    """A task the model's read-out fits: one with real targets (seed 004's, small) for a model reading out real
    values, else (a + b) mod 23."""
    output = part_class(compose_cfg([f"model={model}"]), "model").__dict__.get("output")
    return ["task=frac_x", "loss=mse", "task.n_samples=64"] if output == "real" else ["task.p=23"]


@pytest.mark.parametrize("model", OPTIONS["model"])  # every option in conf/: a new part is covered as it lands
@pytest.mark.parametrize("optim", OPTIONS["optim"])
def test_every_model_trains_a_step_with_every_optimizer(model, optim):
    cfg = compose_cfg(
        [
            f"model={model}",
            f"optim={optim}",
            "model.d_model=32",
            *_task_for(model),
            "optim.warmup_steps=0",
            "optim.grokfast.enabled=true",
        ]
    )
    task = build_task(cfg.task)
    data = task.split()
    torch.manual_seed(0)
    stack = make_stack([build_model(cfg.model, task.spec)], vmap=False)
    optimizer, loss = build_optimizer(stack.flat, [cfg.optim], stack.layout), build_loss(cfg.loss)  # as the loop
    x, y, active = data.train_x[None], data.train_y[None], torch.ones(1, 1, dtype=torch.bool)
    before = stack.member_state(0)
    loss0 = loss(stack.forward(x), y).item()
    for _ in range(5):
        stack.zero_grad()
        loss(stack.forward(x), y).sum().backward()
        optimizer.step(stack.grad, active)
    loss1 = loss(stack.forward(x), y).item()
    out = stack.model(data.val_x)
    assert out.shape == (data.val_y.shape if task.spec.output == "real" else (len(data.val_y), task.spec.n_outputs))
    after = stack.member_state(0)
    assert all(not torch.equal(before[k], after[k]) for k in before)
    assert loss1 < loss0


def test_same_seed_same_metrics_other_seed_differs(tmp_path):
    a = run(compose_cfg(SHORT), tmp_path / "a")
    b = run(compose_cfg(SHORT), tmp_path / "b")
    c = run(compose_cfg(SHORT + ["train.seed=1"]), tmp_path / "c")
    ma, mb, mc = (without_elapsed(read_metrics(tmp_path / n / "metrics.csv")) for n in "abc")
    assert len(ma) == 6 and ma == mb and ma != mc
    assert a["final_val_acc"] == b["final_val_acc"]
    assert c["seed"] == 1


def test_outputs_follow_the_contract(tmp_path):
    summary = run(compose_cfg(SHORT + ["train.plot=true"]), tmp_path)
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0]
    assert header == ",".join(METRIC_FIELDS)
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk == summary
    for key in (
        "status",
        "grokked",
        "grok_epoch",
        "memorized_epoch",
        "final_train_acc",
        "final_val_acc",
        "epochs_run",
        "wall_seconds",
        "ratio",
        "d_model",
        "p",
        "wd",
        "lr",
        "seed",
    ):
        assert key in on_disk
    assert on_disk["ratio"] == pytest.approx(64 / 23) and on_disk["epochs_run"] == 60
    assert (tmp_path / "curves.png").stat().st_size > 10_000
    ckpts = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert ckpts == ["epoch_0000030.pt", "epoch_0000060.pt", "last.prev.pt", "last.pt"]
    state = load_checkpoint(tmp_path / "checkpoints" / "epoch_0000030.pt")
    assert state["epoch"] == 30 and {"model", "optimizer", "rng"} <= set(state)


def test_resume_continues_exactly(tmp_path):
    straight = run(compose_cfg(SHORT), tmp_path / "straight")
    run(compose_cfg([*SHORT, "train.max_epochs=40"]), tmp_path / "split")
    # a later epoch limit on the same dir resumes from checkpoints/last.pt (epoch 40)
    resumed = run(compose_cfg(SHORT), tmp_path / "split")
    assert without_elapsed(read_metrics(tmp_path / "split" / "metrics.csv")) == without_elapsed(
        read_metrics(tmp_path / "straight" / "metrics.csv")
    )
    assert resumed["final_val_acc"] == straight["final_val_acc"]


def test_finished_run_is_not_trained_again(tmp_path):
    first = run(compose_cfg(SHORT), tmp_path)
    again = run(compose_cfg(SHORT), tmp_path)
    assert again == first


@pytest.mark.slow
def test_small_run_groks(shared_dir):
    run_dir = fast_grok_run(shared_dir)  # FAST_GROK, which test_analysis analyses: trained once for both
    s = json.loads((run_dir / "summary.json").read_text())
    assert s["status"] == "grokked" and s["grokked"]
    assert s["final_val_acc"] >= 0.95
    assert s["memorized_epoch"] is not None and s["grok_epoch"] > s["memorized_epoch"]
    rows = read_metrics(run_dir / "metrics.csv")
    assert s["epochs_run"] == rows[-1]["epoch"] < 3000  # stopped by patience after grokking
    at_grok = [r for r in rows if r["epoch"] >= s["grok_epoch"]][:10]
    assert all(r["val_acc"] >= 0.95 for r in at_grok)
    assert [r["val_acc"] for r in rows if r["epoch"] == s["grok_epoch"] - 10][0] < 0.95


def test_auto_engine_is_the_loop_on_cpu_and_a_pack_of_one_on_cuda():
    from grokpipe.config.validate import Machine, choose_engine, prepare

    cpu, cuda = Machine("cpu"), Machine("cuda")
    assert choose_engine(compose_cfg(SHORT), cpu) == "loop"
    assert choose_engine(compose_cfg([*SHORT, "train.engine=packed"]), cpu) == "packed"
    assert choose_engine(compose_cfg(SHORT), cuda) == "packed"
    assert choose_engine(compose_cfg([*SHORT, "optim=sgd"]), cuda) == "packed"
    assert choose_engine(compose_cfg([*SHORT, "train.engine=loop"]), cuda) == "loop"
    assert prepare(compose_cfg(SHORT)).engine == "auto"  # no machine: nothing resolved that depends on one
    assert prepare(compose_cfg(SHORT), cpu).engine == "loop"


@pytest.mark.parametrize("extra", [[], ["optim=sgd", "train.batch_size=64"]])
def test_packed_engine_runs_one_config_like_the_loop(tmp_path, extra):
    loop, packed = tmp_path / "loop", tmp_path / "packed"
    for engine, d in (("loop", loop), ("packed", packed)):
        r = launch([*SHORT, *extra, f"train.engine={engine}", f"hydra.run.dir={d}"], cwd=tmp_path)
        assert r.returncode == 0, r.stderr[-2000:]
    a, b = (read_metrics(d / "metrics.csv") for d in (loop, packed))
    assert [r["epoch"] for r in a] == [r["epoch"] for r in b] == list(range(10, 61, 10))
    assert [r["train_loss"] for r in b] == pytest.approx([r["train_loss"] for r in a], rel=1e-3)
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (loop, packed))
    assert {k for k in sa} == {k for k in sb} and sb["status"] == sa["status"] == "completed"
    assert sorted(p.name for p in (packed / "checkpoints").iterdir()) == sorted(
        p.name for p in (loop / "checkpoints").iterdir()
    )


def test_a_run_resumes_with_a_measure_it_did_not_have(tmp_path):
    """Measures are not part of a run's identity: a metrics.csv written before a column existed resumes, its old
    rows holding an empty cell there; the columns follow the enabled measures."""
    run(compose_cfg([*SHORT, "train.max_epochs=40", "measures=[loss,task_metrics]"]), tmp_path)
    assert (tmp_path / "metrics.csv").read_text().splitlines()[
        0
    ] == "epoch,train_loss,val_loss,train_acc,val_acc,elapsed"
    run(compose_cfg(SHORT), tmp_path)  # the default set
    rows = read_metrics(tmp_path / "metrics.csv")
    assert list(rows[0]) == list(METRIC_FIELDS)
    assert [r["epoch"] for r in rows] == list(range(10, 61, 10))
    assert [r["weight_norm"] is None for r in rows] == [True] * 4 + [False] * 2
    straight = read_metrics(run(compose_cfg(SHORT), tmp_path / "straight") and tmp_path / "straight" / "metrics.csv")
    assert [r["train_loss"] for r in rows] == [r["train_loss"] for r in straight]


def test_a_measure_every_k_evaluations_leaves_empty_cells_between(tmp_path):
    run(compose_cfg([*SHORT, "measures.weight_norm.every=3"]), tmp_path)
    rows = read_metrics(tmp_path / "metrics.csv")
    assert [r["weight_norm"] is not None for r in rows] == [False, False, True, False, False, True]


def test_precision_auto_is_bf16_only_on_bf16_cpus_from_width_32_and_a_resume_elsewhere_is_refused(
    tmp_path, monkeypatch
):
    import grokpipe.run.train as train_module
    from grokpipe.config.validate import Machine, choose_precision
    from grokpipe.core.errors import ConfigError

    def on(flags):
        monkeypatch.setattr(train_module, "cpu_info", lambda: ("a CPU", flags))

    def cfg(d_model: int, epochs: int = 20):
        return compose_cfg([*SHORT, f"model.d_model={d_model}", "train.precision=auto", f"train.max_epochs={epochs}"])

    on(("avx2", "avx512f", "avx512_bf16"))
    assert choose_precision(cfg(32), train_module.machine_of("cpu")) == "bf16"
    assert choose_precision(cfg(16), train_module.machine_of("cpu")) == "fp32"  # narrower: casts cost more
    assert choose_precision(cfg(32), Machine("cuda", frozenset({"avx512_bf16"}))) == "fp32"
    summary = run(cfg(32), tmp_path / "r")
    assert summary["precision"] == "bf16"
    assert json.loads((tmp_path / "r" / "provenance.json").read_text())["precision"] == "bf16"
    on(("avx2", "amx_bf16"))
    assert choose_precision(cfg(64), train_module.machine_of("cpu")) == "bf16"
    on(("avx2", "avx512f"))  # the same run dir on a CPU without bf16 units: auto is fp32 here, not resumed in it
    with pytest.raises(ConfigError, match="precision"):
        run(cfg(32, epochs=40), tmp_path / "r")


def test_a_runs_end_is_a_few_lines_and_no_librarys_log(tmp_path):
    """What `make run` ends with: the outcome, the measures, the time, the files; summary.json whole only when asked;
    no line of matplotlib's (a fresh HOME: its font cache is built, which it logs at INFO)."""
    args = [*SHORT, "train.plot=true", f"hydra.run.dir={tmp_path / 'run'}"]
    env = {"HOME": str(tmp_path), "MPLCONFIGDIR": str(tmp_path / "mpl")}
    r = launch(args, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    end = r.stdout.strip().splitlines()[-5:]
    assert end[0].startswith(("grokked at epoch", "did not grok in 60 epochs")), end
    assert end[2].startswith("trained 60 epochs in ") and "transformer d_model 64 on mod_add p=23" in end[2]
    assert end[3] == f"run dir: {tmp_path / 'run'}   figure: {tmp_path / 'run' / 'curves.png'}"
    assert end[4].startswith("full record: ") and "{" not in r.stdout
    assert "matplotlib" not in r.stdout + r.stderr and "fontManager" not in r.stdout + r.stderr
    whole = launch([*args[:-1], "train.print_summary=true", f"hydra.run.dir={tmp_path / 'again'}"], cwd=tmp_path,
                   env=env)  # fmt: skip
    assert json.loads(whole.stdout[whole.stdout.index("{") :])["epochs_run"] == 60
