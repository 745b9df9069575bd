"""Reproducible by construction: provenance in every run, bitwise-identical reruns on the CPU, and
scripts/reproduce.py's verdicts (exact, parted, bad input), checked on real runs."""

from __future__ import annotations

import json
import sqlite3
import subprocess

import pytest
import torch
from helpers import ROOT, compose_cfg, launch, run_script, without_elapsed
from omegaconf import OmegaConf

from grokpipe.core.outputs import read_metrics
from grokpipe.results.database import build
from grokpipe.run import provenance

# attention, Fourier and every default measure, in a few seconds
SMALL = ["task.p=23", "model.d_model=16", "train.max_epochs=40", "train.checkpoint_every=20", "train.plot=false"]


def _train(tmp_path, name: str, overrides: list[list[str]]) -> list:
    from grokpipe.run.train import train

    cfgs = [compose_cfg([*SMALL, "logger=none", *o]) for o in overrides]
    dirs = [tmp_path / f"{name}{i}" for i in range(len(cfgs))]
    for cfg, run_dir in zip(cfgs, dirs):  # what launch.py records of a run
        (run_dir / ".hydra").mkdir(parents=True)
        OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    train(cfgs, dirs)
    return dirs


def _weights(run_dir) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)["model"]


def _assert_identical(a, b) -> None:
    assert without_elapsed(read_metrics(a / "metrics.csv")) == without_elapsed(read_metrics(b / "metrics.csv"))
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), f"{a} and {b}: weights differ"


@pytest.mark.parametrize("seeds", [[0], [0, 1]], ids=["single", "packed"])
def test_same_config_and_seed_give_bitwise_identical_runs(tmp_path, seeds):
    overrides = [[f"train.seed={s}"] for s in seeds]
    first, second = _train(tmp_path, "a", overrides), _train(tmp_path, "b", overrides)
    for a, b in zip(first, second):
        _assert_identical(a, b)
    if len(seeds) > 1:  # and the members of the pack differ from each other: the seeds reached them
        assert not torch.equal(next(iter(_weights(first[0]).values())), next(iter(_weights(first[1]).values())))
    prov = provenance.read(first[0])
    assert prov["determinism"]["deterministic_algorithms"] is True
    assert prov["threads"] == torch.get_num_threads()


def test_provenance_in_run_dir_summary_and_database(tmp_path):
    result = launch([*SMALL, "logger=none", "train.seed=3", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    run = tmp_path / "run"
    prov = provenance.read(run)
    # the commit and the dirty flag as git itself says them, not as the code under test reads them
    git = lambda *a: subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True, check=True).stdout  # noqa: E731
    commit, dirty = git("rev-parse", "HEAD").strip(), bool(git("status", "--porcelain", "--untracked-files=no").strip())
    assert prov["commit"] == commit and len(commit) == 40 and prov["dirty"] == dirty
    assert prov["packages"]["torch"] == torch.__version__
    assert prov["python"].count(".") == 2 and prov["device"] == "cpu" and prov["device_name"]
    assert prov["command"] == "python launch.py " + " ".join([*SMALL, "logger=none", "train.seed=3"])
    assert json.loads((run / "summary.json").read_text())["provenance"] == prov
    build(tmp_path, tmp_path / "r.db")
    with sqlite3.connect(tmp_path / "r.db") as con:
        row = con.execute(
            "SELECT git_commit, torch_version, device_name, threads, deterministic, command, provenance FROM runs"
        ).fetchone()
        assert row[:6] == (commit, torch.__version__, prov["device_name"], prov["threads"], 1, prov["command"])
        assert json.loads(row[6]) == prov
        # queryable: which runs ran on this commit
        assert con.execute("SELECT COUNT(*) FROM runs WHERE git_commit = ?", (commit,)).fetchone() == (1,)


def test_resume_keeps_the_first_provenance_and_says_what_differs(tmp_path):
    from grokpipe.run.train import run

    run_dir = tmp_path / "run"
    run(compose_cfg([*SMALL, "logger=none", "train.max_epochs=20"]), run_dir)
    first = provenance.read(run_dir)
    faked = {**first, "commit": "0" * 40, "packages": {**first["packages"], "numpy": "0.0"}}
    (run_dir / "provenance.json").write_text(json.dumps(faked))  # as if started by another commit and numpy
    summary = run(compose_cfg([*SMALL, "logger=none"]), run_dir)
    resumed = provenance.read(run_dir)
    assert resumed["commit"] == "0" * 40 and resumed["started"] == first["started"]
    (entry,) = resumed["resumes"]
    assert entry["epoch"] == 20
    numpy = first["packages"]["numpy"]
    assert entry["differs"] == {"commit": ["0" * 40, first["commit"]], "packages.numpy": ["0.0", numpy]}
    assert summary["provenance"] == resumed


def test_reproduce_exact_then_parted_then_provenance(tmp_path):
    (orig,) = _train(tmp_path, "orig", [["train.seed=5"]])
    result = run_script("reproduce", str(orig), "--out", str(tmp_path / "again"))
    assert result.returncode == 0, result.stderr
    assert "metrics.csv: 4 rows compared: 4 exact, 0 within tolerance" in result.stdout
    assert "weights at epoch 20: identical" in result.stdout and "weights at epoch 40: identical" in result.stdout
    assert "provenance: same commit, versions, device, threads and settings" in result.stdout
    report = json.loads((tmp_path / "again" / "reproduce.json").read_text())
    assert report["verdict"] == "exact" and report["rows"]["parted"] is None

    # the original's row at epoch 30 altered past the tolerance, its provenance from another commit and CPU
    lines = (orig / "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    cells = lines[3].split(",")
    cells[header.index("val_loss")] = repr(float(cells[header.index("val_loss")]) * 1.01)
    lines[3] = ",".join(cells)
    (orig / "metrics.csv").write_text("\n".join(lines) + "\n")
    prov = json.loads((orig / "provenance.json").read_text())
    (orig / "provenance.json").write_text(json.dumps({**prov, "commit": "f" * 40, "device_name": "Other CPU"}))
    result = run_script("reproduce", str(orig), "--out", str(tmp_path / "third"), "--epochs", "30")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "metrics.csv: 3 rows compared: 2 exact, 0 within tolerance" in result.stdout
    assert "parted at epoch 30: val_loss" in result.stdout
    assert f"commit: '{'f' * 40}' -> '{prov['commit']}'" in result.stdout
    assert f"device_name: 'Other CPU' -> '{prov['device_name']}'" in result.stdout


def test_a_packed_cell_re_runs_in_its_pack_bit_for_bit(tmp_path):
    """A cell of a packed sweep re-runs with the other members of its pack (their float order is the pack's): exact
    rows and identical weights, where a re-run alone parts in the low bits."""
    sweep = tmp_path / "sw"
    args = ["-m", *SMALL, "train.seed=0,1", "hydra.sweeper.pack=true", "logger=none", "train.threads=1"]
    made = launch([*args, f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert made.returncode == 0, made.stderr[-3000:]
    result = run_script("reproduce", str(sweep / "1"), "--out", str(tmp_path / "again"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "as the pack it trained in: 2 members" in result.stdout
    report = json.loads((tmp_path / "again" / "reproduce.json").read_text())
    assert report["verdict"] == "exact" and report["pack"] == [str(sweep / "0"), str(sweep / "1")]
    assert [w["identical"] for w in report["weights"]] == [True, True]  # epochs 20 and 40
    assert (tmp_path / "again" / "pack_members" / "0" / "metrics.csv").is_file()
    assert OmegaConf.load(sweep / "1" / ".hydra" / "config.yaml").train.pack_forward == "auto"  # batched on a CPU


def test_a_pack_made_before_pack_forward_re_runs_through_vmap_bit_for_bit(tmp_path):
    """A pack recorded without train.pack_forward (made when every pack was vmap) re-runs through vmap, exactly;
    today's CPU default (batched) rounds otherwise, so the re-run would part."""
    sweep = tmp_path / "sw"
    args = ["-m", *SMALL, "train.seed=0,1", "hydra.sweeper.pack=true", "logger=none", "train.threads=1"]
    made = launch([*args, "train.pack_forward=vmap", f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert made.returncode == 0, made.stderr[-3000:]
    for cell in ("0", "1"):
        path = sweep / cell / ".hydra" / "config.yaml"
        old = OmegaConf.load(path)
        del old.train["pack_forward"]
        OmegaConf.save(old, path)
    result = run_script("reproduce", str(sweep / "0"), "--out", str(tmp_path / "again"))
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "again" / "reproduce.json").read_text())
    assert report["verdict"] == "exact" and [w["identical"] for w in report["weights"]] == [True, True]
    assert OmegaConf.load(tmp_path / "again" / ".hydra" / "config.yaml").train.pack_forward == "vmap"


def test_reproduce_from_a_database_row(tmp_path):
    _train(tmp_path, "r", [["train.max_epochs=20"]])
    build(tmp_path, tmp_path / "r.db")
    with sqlite3.connect(tmp_path / "r.db") as con:
        (run_id,) = con.execute("SELECT run_id FROM runs").fetchone()
    result = run_script("reproduce", run_id, "--db", str(tmp_path / "r.db"), "--epochs", "10")
    assert result.returncode == 0, result.stderr
    assert "metrics.csv: 1 rows compared: 1 exact" in result.stdout
    assert (tmp_path / "r0.reproduce-1" / "reproduce.json").exists()


def test_reproduce_bad_input_is_one_line(tmp_path):
    (run,) = _train(tmp_path, "r", [["train.max_epochs=10"]])
    old = OmegaConf.to_container(OmegaConf.load(run / ".hydra" / "config.yaml"))
    old["model"]["dropout"] = 0.1  # a key this grokpipe does not know: a run of another version
    (tmp_path / "old" / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(old), tmp_path / "old" / ".hydra" / "config.yaml")
    (tmp_path / "old" / "metrics.csv").write_text((run / "metrics.csv").read_text())
    (tmp_path / "old" / "provenance.json").write_text(json.dumps({"grokpipe_version": "0.0.1", "commit": "abc"}))
    cases = {
        str(tmp_path / "nowhere"): "is not a directory",
        str(tmp_path): "is not a grokpipe run dir (it needs .hydra/config.yaml and metrics.csv)",
        str(tmp_path / "old"): "model.dropout is not allowed",
    }
    for arg, message in cases.items():
        result = run_script("reproduce", arg)
        assert result.returncode == 2, result.stdout
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("error: ") and message in line, line
    (line,) = run_script("reproduce", str(tmp_path / "old")).stderr.strip().splitlines()
    assert line.endswith("it was made by grokpipe 0.0.1 at commit abc"), line
    (line,) = run_script("reproduce", "x", "--db", str(tmp_path / "none.db")).stderr.strip().splitlines()
    assert line == f"error: {tmp_path / 'none.db'} is not a results database"
    assert not list(tmp_path.glob("*.reproduce-*")), "bad input trained nothing"
