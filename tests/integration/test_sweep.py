"""Sweeps: ellipsis ranges, the ratio knob, presets, the check of every cell before launch, the local
launcher, failing cells, and the sweep summary with its phase diagram and W&B run."""

from __future__ import annotations

import csv
import itertools
import json

import pytest
from helpers import ROOT, checked_rows, compose_cfg, launch, offline_runs, summary
from hydra import compose, initialize_config_dir

from grokpipe.config.validate import prepare
from grokpipe.core.cells import PACKS, exit_status, read_cells, read_pack, write_cells, write_packs
from grokpipe.core.outputs import read_metrics
from hydra_plugins.grokpipe_plugins.grid_sweeper import expand_ellipsis

TINY = ["model=mlp", "task.p=23", "train.max_epochs=60", "logger=none", "train.print_every=0", "train.plot=false"]


@pytest.mark.parametrize(
    "values,expected",
    [
        (["8", "16", "...", "256"], ["8", "16", "32", "64", "128", "256"]),
        (["8", "16", "24", "...", "48"], ["8", "16", "24", "32", "40", "48"]),
        (["1", "2", "...", "5"], ["1", "2", "3", "4", "5"]),
        (["0.01", "0.1", "...", "10"], ["0.01", "0.1", "1.0", "10.0"]),
        (["0.1", "0.2", "...", "0.5"], ["0.1", "0.2", "0.3", "0.4", "0.5"]),
        (["64", "32", "...", "8"], ["64", "32", "16", "8"]),
    ],
)
def test_ellipsis_gives_the_progression_the_first_terms_imply(values, expected):
    assert expand_ellipsis("k", values) == expected


@pytest.mark.parametrize(
    "values",
    [
        ["8", "...", "64"],
        ["8", "16", "...", "250"],
        ["a", "b", "...", "c"],
        ["8", "16", "..."],
        ["8", "16", "17", "...", "64"],
    ],
)
def test_ellipsis_without_a_progression_is_refused(values):
    with pytest.raises(ValueError, match=r"^k="):
        expand_ellipsis("k", values)


def test_ellipsis_error_on_the_command_line_is_one_line(tmp_path):
    r = launch(["-m", "model.d_model=8,16,...,250", *TINY, f"hydra.sweep.dir={tmp_path}/sw"], cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == (
        "error: model.d_model=8,16,...,250: no arithmetic or geometric progression from 8,16 reaches 250"
    )
    assert "Traceback" not in r.stderr and not (tmp_path / "sw" / "0").exists()


def test_one_bad_cell_stops_the_whole_grid_before_launch(tmp_path):
    r = launch(["-m", *TINY, "task.p=23,24", f"hydra.sweep.dir={tmp_path}/sw", "hydra/launcher=local"], cwd=tmp_path)
    assert r.returncode == 2
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("error: cell 1 (task.p=24") and "task.p=24 is not allowed: must be a prime" in line
    assert not (tmp_path / "sw" / "0").exists()


@pytest.mark.parametrize(
    "ratio,p,model,d_model",
    # 0.03 at p=97: the heads' least width, 4 (ratio 0.041, within 2x); 0.01 would be refused (test_validation)
    [(1.5, 97, "transformer", 144), (0.25, 97, "transformer", 24), (1.0, 23, "mlp", 23), (0.03, 97, "transformer", 4)],
)
def test_ratio_sets_d_model_to_a_multiple_of_the_heads(ratio, p, model, d_model):
    cfg = compose_cfg([f"model={model}", f"model.ratio={ratio}", f"task.p={p}"])
    prepare(cfg)
    assert cfg.model.d_model == d_model


def _preset_grid(name: str) -> list[dict]:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"sweep={name}"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    keys = list(params)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(str(params[k]).split(",") for k in keys))], cfg


@pytest.mark.parametrize(
    "name,cells,epochs",
    [
        ("exp1_weight_decay", 25, 50000),
        ("exp2_hidden_dim", 4, 50000),
        ("exp3_prime", 4, 50000),
        ("exp4_matched", 4, 20000),
        ("exp5_ratio_wd1", 40, 20000),
        ("exp5_ratio_wd0p1", 40, 100000),
        ("exp5_ratio_wd0p01", 40, 200000),
        ("prime53_ratio", 11, 20000),
        ("exp5_extended_wd1", 10, 20000),
        ("exp5_extended_wd0p1", 10, 100000),
        ("exp5_extended_wd0p01", 10, 200000),
    ],
)
def test_presets_hold_seed003_grids(name, cells, epochs):
    grid, cfg = _preset_grid(name)
    assert len(grid) == cells
    assert cfg.train.max_epochs == epochs and cfg.logger.group == name
    for cell in grid[:3] + grid[-3:]:
        c = compose_cfg([f"sweep={name}", *(f"{k}={v}" for k, v in cell.items())])
        prepare(c)


def test_local_sweep_writes_every_cell_and_the_summary(tmp_path):
    sweep = tmp_path / "sw"
    r = launch(
        [
            "-m",
            "model.d_model=8,16",
            "optim.wd=0.1,1",
            *TINY[:-3],
            "logger=wandb",
            "train.print_every=0",
            "hydra/launcher=local",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=tmp_path,
        env={"HOME": str(tmp_path)},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    summaries = [json.loads((sweep / str(i) / "summary.json").read_text()) for i in range(4)]
    assert sorted((s["d_model"], s["wd"]) for s in summaries) == [(8, 0.1), (8, 1.0), (16, 0.1), (16, 1.0)]
    assert all(s["status"] == "completed" and s["epochs_run"] == 60 for s in summaries)
    rows = list(csv.DictReader(open(sweep / "sweep_summary.csv")))
    assert len(rows) == 4 and all(r["n"] == "1" and r["failed"] == "0" for r in rows)
    assert all(s["split"] == "seed" and s["split_seed"] == s["seed"] for s in summaries)
    assert {r["split"] for r in rows} == {"by seed"}
    assert "splits: by seed (task.split_seed follows train.seed): seeds vary init and split" in r.stdout
    assert (sweep / "phase_diagram.png").stat().st_size > 5000
    assert "sweep summary (4 cells, 0 failed)" in r.stdout
    # every cell and the summary run share one W&B group
    groups = {summary(offline_runs(sweep / str(i))[0])["config"]["logger"]["group"] for i in range(4)}
    (summary_run,) = offline_runs(sweep)
    s = summary(summary_run)
    assert groups == {s["config"]["logger"]["group"]} and groups.pop().startswith("sweep-")
    assert s["summary"]["n_cells"] == 4 and s["summary"]["n_failed"] == 0
    assert s["summary"]["sweep_summary"]["_type"] == "table-file"
    assert s["summary"]["phase_diagram"]["_type"] == "image-file"


@pytest.mark.parametrize("how", [["hydra/launcher=local"], ["hydra.sweeper.pack=true"]], ids=["local", "one-pack"])
def test_a_failing_cell_leaves_the_others_and_fails_the_command(tmp_path, how):
    """Alone or in a pack: a pack that raises trains its cells again one by one, so only the faulty cell fails."""
    sweep = tmp_path / "sw"
    # a directory where cell 1's metrics.csv goes: it raises at run time on any machine, past every validation
    (sweep / "1" / "metrics.csv").mkdir(parents=True)
    r = launch(["-m", "train.seed=0,1", *TINY, *how, f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert r.returncode == 1
    if how == ["hydra.sweeper.pack=true"]:
        assert [p["cells"] for p in json.loads((sweep / PACKS).read_text())] == [[0, 1]]
        assert "pack 0 stopped (IsADirectoryError: " in r.stdout and "its cells go on one by one" in r.stdout
    ok = json.loads((sweep / "0" / "summary.json").read_text())
    failed = json.loads((sweep / "1" / "summary.json").read_text())
    assert ok["status"] == "completed" and failed["status"] == "failed"
    assert failed["error"].startswith("IsADirectoryError: [Errno 21] Is a directory") and failed["seed"] == 1
    assert "Traceback" in r.stderr  # an unexpected exception keeps its traceback in the cell's log
    cells = list(csv.DictReader(open(sweep / "cells.csv")))
    assert [c["status"] for c in cells] == ["completed", "failed"]
    assert "cell 1 failed: IsADirectoryError" in r.stdout
    checked_rows(sweep / "0" / "metrics.csv", list(range(10, 61, 10)))


@pytest.mark.parametrize("launcher", ["basic", "local"])
def test_packed_sweep_trains_one_job_per_shape_with_single_run_outputs(tmp_path, launcher):
    """One job per shape in process; on the local launcher with 4 slots each shape's pack is halved, so every slot
    has a job."""
    sweep = tmp_path / "sw"
    slots = ["hydra.launcher.n_jobs=4"] if launcher == "local" else []
    r = launch(
        [
            "-m",
            *TINY,
            "model.d_model=8,16",
            "optim.wd=0.1,1",
            "train.seed=0,1",
            "hydra.sweeper.pack=true",
            f"hydra/launcher={launcher}",
            *slots,
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    jobs = 4 if slots else 2
    assert f"Packing 8 cells into {jobs} jobs (by shape)" in r.stderr + r.stdout
    plan = json.loads((sweep / "packs.json").read_text())
    assert sorted(len(p["cells"]) for p in plan) == [8 // jobs] * jobs and (sweep / "packs" / str(jobs - 1)).is_dir()
    widths = [{json.loads((sweep / str(c) / "summary.json").read_text())["d_model"] for c in p["cells"]} for p in plan]
    assert all(len(w) == 1 for w in widths)  # a pack is of one shape
    if slots:  # the costlier shape (d_model 16) first
        assert [w.pop() for w in widths] == [16, 16, 8, 8]
    summaries = [json.loads((sweep / str(i) / "summary.json").read_text()) for i in range(8)]
    assert sorted((s["d_model"], s["wd"], s["seed"]) for s in summaries) == sorted(
        itertools.product((8, 16), (0.1, 1.0), (0, 1))
    )
    assert all(s["status"] == "completed" and s["epochs_run"] == 60 for s in summaries)
    assert all((sweep / str(i) / ".hydra" / "config.yaml").exists() for i in range(8))
    if launcher == "local":
        return  # the member-vs-alone comparison once is enough
    assert len(list(csv.DictReader(open(sweep / "sweep_summary.csv")))) == 4
    # a packed cell trains what the same config trains alone
    cell = next(i for i, s in enumerate(summaries) if (s["d_model"], s["wd"], s["seed"]) == (16, 1.0, 1))
    alone = tmp_path / "alone"
    one = launch([*TINY, "model.d_model=16", "optim.wd=1", "train.seed=1", f"hydra.run.dir={alone}"], cwd=tmp_path)
    assert one.returncode == 0, one.stderr[-2000:]
    packed_rows, alone_rows = (read_metrics(d / "metrics.csv") for d in (sweep / str(cell), alone))
    assert [r["epoch"] for r in packed_rows] == [r["epoch"] for r in alone_rows]
    for a, b in zip(packed_rows, alone_rows):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-3)
        assert a["val_acc"] == pytest.approx(b["val_acc"], abs=0.02)


def test_a_pack_of_any_optimizer_trains_as_one_job(tmp_path):
    sweep = tmp_path / "sw"
    r = launch(
        ["-m", *TINY, "optim=sgd", "train.seed=0,1", "hydra.sweeper.pack=true", f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert [p["cells"] for p in json.loads((sweep / PACKS).read_text())] == [[0, 1]]
    for n in (0, 1):
        done = json.loads((sweep / str(n) / "summary.json").read_text())
        assert done["status"] == "completed" and done["optimizer"] == "sgd" and done["seed"] == n


def test_the_sweep_exit_status_is_1_unless_every_expected_cell_succeeded(tmp_path):
    write_cells(tmp_path, [{"num": n, "overrides": [], "dir": str(tmp_path / str(n))} for n in range(3)])
    for n, status in ((0, "grokked"), (1, "completed"), (2, "diverged")):
        (tmp_path / str(n)).mkdir()
        (tmp_path / str(n) / "summary.json").write_text(json.dumps({"status": status}))
    assert exit_status(read_cells(tmp_path)) == 0
    (tmp_path / "2" / "summary.json").unlink()  # a cell that never wrote its summary
    assert [c["status"] for c in read_cells(tmp_path)] == ["grokked", "completed", "missing"]
    assert exit_status(read_cells(tmp_path)) == 1
    assert exit_status([]) == 1  # a sweep with no cells did not succeed either


def test_a_new_manifest_drops_the_packs_plan_of_an_earlier_launch(tmp_path):
    write_cells(tmp_path, [{"num": 0, "overrides": [], "dir": str(tmp_path / "0")}])
    write_packs(tmp_path, [{"pack": 0, "cells": [0], "dirs": [str(tmp_path / "0")]}])
    assert read_pack(tmp_path, 0)["cells"] == [0] and read_pack(tmp_path, 1) is None
    write_cells(tmp_path, [{"num": 0, "overrides": [], "dir": str(tmp_path / "0")}])
    assert not (tmp_path / PACKS).exists() and read_pack(tmp_path, 0) is None
    # a boundary search's next round (or resume) adds to its plan: pack numbers go on, earlier packs stay readable
    write_packs(tmp_path, [{"pack": 0, "cells": [0], "dirs": [str(tmp_path / "0")]}])
    cells = [{"num": n, "overrides": [], "dir": str(tmp_path / str(n))} for n in range(2)]
    write_cells(tmp_path, cells, keep_packs=True)
    assert read_pack(tmp_path, 0)["cells"] == [0]


def test_pack_auto_packs_gpu_cells_and_cpu_cells_only_where_the_measured_rule_says(tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    from hydra_plugins.grokpipe_plugins.grid_sweeper import GridSweeper

    def cell(device: str, launcher: dict, d_model: int, p: int):
        task = {"_target_": "grokpipe.tasks.modular.ModularTask", "p": p, "op": "add"}
        return OmegaConf.create({"train": {"device": device}, "hydra": {"launcher": launcher}, "task": task,
                                 "model": {"name": "transformer", "d_model": d_model}})  # fmt: skip

    def sweeper():
        s = GridSweeper.__new__(GridSweeper)  # the decision alone, without Hydra's sweeper setup
        s.pack, s.max_members = "auto", None
        return s

    def decide(device: str, launcher: dict, d_model: int = 64, p: int = 97) -> bool:
        return sweeper().packs([cell(device, launcher, d_model, p)])

    slurm = {"gpus_per_node": 0}
    assert decide("cuda", {}) and not decide("cpu", {}) and not decide("mps", {})
    assert decide("auto", {**slurm, "gpus_per_node": 1}) and not decide("auto", slurm)
    assert decide("auto", {}) is __import__("torch").cuda.is_available()  # local and in-process: this machine
    # as measured on this CPU: at p=97 no width packs (0.83-0.88x per member); at p=23 the narrow widths do
    assert not decide("cpu", {}, d_model=8) and not decide("auto", slurm, d_model=4)
    assert decide("cpu", {}, d_model=12, p=23) and not decide("cpu", {}, d_model=92, p=23)
    assert not decide("mps", {}, d_model=8, p=23)
    # a grid of mixed widths: the paying shapes packed with their measured member count, the others one job a cell
    from grokpipe.config.packing import shape_text

    mixed = sweeper()
    cells = [cell("cpu", {}, d, 23) for d in (4, 92)]
    assert mixed.packs(cells)
    assert mixed.caps == {shape_text(cells[0]): 32, shape_text(cells[1]): 1}
    capped = sweeper()
    capped.max_members = 5  # the user's max_members wins where packing pays
    assert capped.packs(cells) and capped.caps == {shape_text(cells[0]): 5, shape_text(cells[1]): 1}
    # where a measurement says a pack pays at p=97 too, it packs there
    import grokpipe.config.packing as packing

    monkeypatch.setitem(packing.CPU_PACK_MEASURED, "transformer", [(97, 8, 8, 1.6), (97, 32, 32, 0.9)])
    assert decide("cpu", {}, d_model=8) and not decide("cpu", {}, d_model=32)
    monkeypatch.undo()
    # the default (auto) on this CPU: the small MLP at p=23 packs (1.46x per member or more measured there), at p=97
    # it runs one job per cell, no pack plan
    sweep = tmp_path / "sw"
    r = launch(["-m", *TINY, "train.max_epochs=20", "train.seed=0,1", f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    if not __import__("torch").cuda.is_available():
        assert "pack=auto: packed at d_model 64 (p=23), up to 8 a pack (CPU cells" in r.stderr + r.stdout
        assert [p["cells"] for p in json.loads((sweep / PACKS).read_text())] == [[0, 1]]  # in process: one job
        wide = tmp_path / "wide"
        args = ["-m", *TINY, "task.p=97", "train.max_epochs=10", "train.seed=0,1", f"hydra.sweep.dir={wide}"]
        r = launch(args, cwd=tmp_path)
        assert r.returncode == 0, r.stderr[-2000:]
        assert "pack=auto: one job per cell: a CPU pack does not pay here (d_model 64 (p=97))" in r.stderr + r.stdout
        assert not (wide / PACKS).exists()
    bad = launch(["-m", *TINY, "train.seed=0,1", "hydra.sweeper.pack=maybe", f"hydra.sweep.dir={sweep}2"], cwd=tmp_path)
    assert bad.returncode == 2 and "hydra.sweeper.pack=maybe is not allowed: true, false or auto" in bad.stderr


def test_a_sweep_is_summarised_by_its_own_axes(tmp_path):
    """optimiser x lr: four rows with the seeds aggregated (not one ratio x wd row), in the table, sweep_summary.csv,
    cells.csv, the database's sweep_cells view and a grid figure; a cell killed before it wrote anything is a
    failure in its own row."""
    import sqlite3

    from grokpipe.sweep.summary import summarize

    sweep = tmp_path / "sw"
    args = ["-m", "optim=adamw,muon", "optim.lr=1e-3,3e-3", "train.seed=0,1", *TINY, "hydra/launcher=local"]
    r = launch([*args, f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    coords = [c["coords"] for c in json.loads((sweep / "cells.json").read_text())]
    assert {json.dumps(c) for c in coords} == {json.dumps({"optim": o, "optim.lr": lr}) for o in ("adamw", "muon")
                                               for lr in (0.001, 0.003)}  # fmt: skip
    header, *lines = [line.split() for line in r.stdout.split("sweep summary")[1].splitlines()[1:6]]
    assert header[:3] == ["optim", "optim.lr", "ratio"] and "wd" in header
    expected = [["adamw", "0.001"], ["adamw", "0.003"], ["muon", "0.001"], ["muon", "0.003"]]
    assert [line[:2] for line in lines] == expected
    rows = list(csv.DictReader(open(sweep / "sweep_summary.csv")))
    assert [(x["optim"], float(x["optim.lr"]), x["n"]) for x in rows] == [
        ("adamw", 0.001, "2"), ("adamw", 0.003, "2"), ("muon", 0.001, "2"), ("muon", 0.003, "2")
    ]  # fmt: skip
    cells = list(csv.DictReader(open(sweep / "cells.csv")))
    assert {(x["optim"], x["optim.lr"]) for x in cells} == {(x["optim"], x["optim.lr"]) for x in rows}
    with sqlite3.connect(sweep / "experiments.db") as con:
        view = con.execute("SELECT coords, n, split FROM sweep_cells").fetchall()
    assert sorted((json.loads(c)["optim"], json.loads(c)["optim.lr"], n, s) for c, n, s in view) == [
        ("adamw", 0.001, 2, "seed"), ("adamw", 0.003, 2, "seed"), ("muon", 0.001, 2, "seed"), ("muon", 0.003, 2, "seed")
    ]  # fmt: skip
    assert (sweep / "phase_diagram.png").stat().st_size > 5000
    # a cell whose process was killed before it wrote a file: a failure in its own row, not a row lost
    killed = next(c for c in json.loads((sweep / "cells.json").read_text()) if c["coords"]["optim"] == "muon")
    for f in sorted((sweep / str(killed["num"])).rglob("*"), reverse=True):
        f.unlink() if f.is_file() else f.rmdir()
    _, table = summarize(sweep)
    (row,) = [t for t in table if t["failed"]]
    assert (row["optim"], row["optim.lr"]) == ("muon", killed["coords"]["optim.lr"])
    assert (row["n"], row["failed"], row["split"]) == (2, 1, "by seed") and len(table) == 4
