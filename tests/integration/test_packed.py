"""Packed training: every member of a stacked pack trains exactly as its config would alone, with the same outputs."""

from __future__ import annotations

import json
import os
import re
import shutil

import pytest
import torch
from helpers import assert_same_rows, checked_rows, compose_cfg, file_hashes

from grokpipe.config.packing import check_packable, group_by_shape
from grokpipe.core.checkpoint import load_checkpoint
from grokpipe.core.errors import ConfigError
from grokpipe.core.outputs import METRIC_FIELDS, StorageError, read_metrics
from grokpipe.run.train import run
from grokpipe.run.train import train as train_packed

# one xdist worker runs the module (pytest -n, --dist loadgroup): three tests share one pack and its single runs
pytestmark = pytest.mark.xdist_group("packed_pack_and_singles")

BASE = [
    "task.p=23",
    "model.d_model=32",
    "train.max_epochs=100",
    "train.patience=null",
    "train.latest_every=50",
    "train.checkpoint_every=50",
    "logger=none",
    "train.plot=false",
    "train.print_every=0",
]
# three members differing in every per-member key: seed, wd, lr, split seed, warm-up
MEMBERS = [
    ["train.seed=0"],
    ["train.seed=1", "optim.wd=0.1", "optim.lr=3e-3"],
    ["train.seed=2", "optim.wd=3", "optim.lr=5e-4", "task.split_seed=4", "optim.warmup_steps=0"],
]


@pytest.fixture(scope="module")
def pack_and_singles(tmp_path_factory, float64_one_thread):
    root = tmp_path_factory.mktemp("pack")
    cfgs = [compose_cfg(BASE + m) for m in MEMBERS]
    packed = train_packed(cfgs, [root / f"member{i}" for i in range(len(MEMBERS))])
    singles = [run(compose_cfg(BASE + m), root / f"single{i}") for i, m in enumerate(MEMBERS)]
    return root, packed, singles


def test_members_match_single_runs_to_1e6(pack_and_singles):
    root, packed, singles = pack_and_singles
    for i, (p, s) in enumerate(zip(packed, singles)):
        for key in ("final_train_loss", "final_val_loss", "final_train_acc", "final_val_acc"):
            assert p[key] == pytest.approx(s[key], abs=1e-6), (i, key)
        assert (p["status"], p["epochs_run"], p["grok_epoch"]) == (s["status"], s["epochs_run"], s["grok_epoch"])
        a = load_checkpoint(root / f"member{i}" / "checkpoints" / "last.pt")
        b = load_checkpoint(root / f"single{i}" / "checkpoints" / "last.pt")
        assert a["model"].keys() == b["model"].keys()
        for name in a["model"]:
            torch.testing.assert_close(a["model"][name], b["model"][name], atol=1e-6, rtol=0)
        assert a["optimizer"]["steps"] == b["optimizer"]["steps"] == 100
        for moment in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(a["optimizer"][moment], b["optimizer"][moment], atol=1e-6, rtol=0)
        rows_p, rows_s = (
            read_metrics(root / f"member{i}" / "metrics.csv"),
            read_metrics(root / f"single{i}" / "metrics.csv"),
        )
        assert [r["epoch"] for r in rows_p] == [r["epoch"] for r in rows_s] == list(range(10, 101, 10))
        for rp, rs in zip(rows_p, rows_s):
            for key in ("train_loss", "val_loss", "train_acc", "val_acc", "weight_norm", "lr"):
                assert rp[key] == pytest.approx(rs[key], rel=1e-5, abs=1e-6), (i, rp["epoch"], key)
    # the members really differ: otherwise matching them proves little
    assert len({round(p["final_train_loss"], 4) for p in packed}) == len(MEMBERS)
    # each on its own split: members 0 and 1 on their seeds' (the default), member 2 on the split it names
    assert [(p["split"], p["split_seed"]) for p in packed] == [("seed", 0), ("seed", 1), ("fixed", 4)]
    assert [(s["split"], s["split_seed"]) for s in singles] == [(p["split"], p["split_seed"]) for p in packed]


def test_member_outputs_follow_the_contract(pack_and_singles):
    root, packed, singles = pack_and_singles
    for i, (p, s) in enumerate(zip(packed, singles)):
        d = root / f"member{i}"
        assert (d / "metrics.csv").read_text().splitlines()[0] == ",".join(METRIC_FIELDS)
        on_disk = json.loads((d / "summary.json").read_text())
        assert on_disk.keys() == s.keys() and on_disk == p
        assert on_disk["run_dir"] == str(d) and on_disk["seed"] == i
        names = sorted(f.name for f in (d / "checkpoints").iterdir())
        assert names == sorted(f.name for f in (root / f"single{i}" / "checkpoints").iterdir())
        assert {"epoch_0000050.pt", "epoch_0000100.pt", "last.pt"} <= set(names)
        mid_p = load_checkpoint(d / "checkpoints" / "epoch_0000050.pt")
        mid_s = load_checkpoint(root / f"single{i}" / "checkpoints" / "epoch_0000050.pt")
        assert mid_p.keys() == mid_s.keys() and mid_p["epoch"] == 50 and mid_p["status"] == "running"
        torch.testing.assert_close(mid_p["model"], mid_s["model"], atol=1e-6, rtol=0)


def test_packed_checkpoint_resumes_in_a_single_run(pack_and_singles):
    root, _, _ = pack_and_singles
    longer = BASE + MEMBERS[2] + ["train.max_epochs=120"]
    from_pack = run(compose_cfg(longer), root / "member2")
    from_single = run(compose_cfg(longer), root / "single2")
    assert from_pack["epochs_run"] == from_single["epochs_run"] == 120
    assert from_pack["final_train_loss"] == pytest.approx(from_single["final_train_loss"], abs=1e-6)
    assert [r["epoch"] for r in read_metrics(root / "member2" / "metrics.csv")][-2:] == [110, 120]


def test_an_early_grokker_stops_while_the_others_go_on(tmp_path, float64_one_thread):
    base = [
        "model=mlp",
        "task.p=23",
        "task.train_frac=0.9",
        "optim.wd=2",
        "train.max_epochs=300",
        "train.patience=30",
        "task.generalize_at=0.6",
        "train.grok_window=3",
        "logger=none",
        "train.plot=false",
        "train.print_every=0",
    ]
    fast, slow = base + ["optim.lr=1e-2"], base + ["optim.lr=1e-5", "train.seed=1"]
    a, b = train_packed([compose_cfg(fast), compose_cfg(slow)], [tmp_path / "fast", tmp_path / "slow"])
    assert a["status"] == "grokked" and a["epochs_run"] == a["grok_epoch"] + 30 < 300
    assert b["status"] == "completed" and b["epochs_run"] == 300 and not b["grokked"]
    assert read_metrics(tmp_path / "fast" / "metrics.csv")[-1]["epoch"] == a["epochs_run"]
    assert read_metrics(tmp_path / "slow" / "metrics.csv")[-1]["epoch"] == 300
    # the stopped member was frozen at its stop: its checkpoint is what a run alone ends with
    alone = run(compose_cfg(fast), tmp_path / "alone")
    assert (alone["grok_epoch"], alone["epochs_run"]) == (a["grok_epoch"], a["epochs_run"])
    ca, cb = (
        load_checkpoint(tmp_path / "fast" / "checkpoints" / "last.pt"),
        load_checkpoint(tmp_path / "alone" / "checkpoints" / "last.pt"),
    )
    assert ca["epoch"] == cb["epoch"] == a["epochs_run"] and ca["status"] == "grokked"
    torch.testing.assert_close(ca["model"], cb["model"], atol=1e-6, rtol=0)
    torch.testing.assert_close(ca["optimizer"], cb["optimizer"], atol=1e-6, rtol=0)


def _pair(epochs: int, extra: tuple = ()) -> list:
    return [compose_cfg([*BASE, *m, f"train.max_epochs={epochs}", *extra]) for m in MEMBERS[:2]]


def test_a_pack_resumes_where_it_stopped(tmp_path, float64_one_thread):
    train_packed(_pair(60), [tmp_path / "a", tmp_path / "b"])
    resumed = train_packed(_pair(100), [tmp_path / "a", tmp_path / "b"])
    straight = train_packed(_pair(100), [tmp_path / "c", tmp_path / "d"])
    for r, s in zip(resumed, straight):
        assert r["epochs_run"] == s["epochs_run"] == 100
        assert r["final_train_loss"] == pytest.approx(s["final_train_loss"], abs=1e-6)
    assert [r["epoch"] for r in read_metrics(tmp_path / "a" / "metrics.csv")] == list(range(10, 101, 10))


def test_grokfast_members_match_single_runs(tmp_path, float64_one_thread):
    extra = ("optim.grokfast.enabled=true", "optim.grokfast.alpha=0.9", "optim.grokfast.lamb=3")
    packed = train_packed(_pair(30, extra), [tmp_path / "m0", tmp_path / "m1"])
    for i, cfg in enumerate(_pair(30, extra)):
        alone = run(cfg, tmp_path / f"s{i}")
        assert packed[i]["final_train_loss"] == pytest.approx(alone["final_train_loss"], abs=1e-6)
        a = load_checkpoint(tmp_path / f"m{i}" / "checkpoints" / "last.pt")
        b = load_checkpoint(tmp_path / f"s{i}" / "checkpoints" / "last.pt")
        torch.testing.assert_close(a["model"], b["model"], atol=1e-6, rtol=0)
        torch.testing.assert_close(a["optimizer"]["grokfast_ema"], b["optimizer"]["grokfast_ema"], atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "override, key",
    [("model.d_model=64", "model.d_model"), ("task.p=29", "task.p"), ("train.precision=bf16", "train.precision")],
)
def test_a_shape_mismatch_is_refused_in_one_line(tmp_path, override, key):
    cfgs = [compose_cfg(BASE), compose_cfg([*BASE, "train.seed=1", override])]
    with pytest.raises(ConfigError) as err:
        train_packed(cfgs, [tmp_path / "a", tmp_path / "b"])
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"cannot pack: {key} differs")
    assert not (tmp_path / "a").exists()
    check_packable(
        [compose_cfg(BASE), compose_cfg([*BASE, "train.seed=3", "optim.wd=0.3", "optim.lr=0.01", "task.split_seed=2"])]
    )


def test_a_grid_is_grouped_into_packable_sets():
    cells = [
        compose_cfg([*BASE, f"train.seed={s}", f"optim.wd={wd}", f"model.d_model={d}"])
        for d in (32, 64)
        for wd in (0.1, 1.0)
        for s in (0, 1)
    ]
    assert group_by_shape(cells) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert group_by_shape(cells, max_members=3) == [[0, 1, 2], [3], [4, 5, 6], [7]]
    for group in group_by_shape(cells):
        check_packable([cells[i] for i in group])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: the graph is captured only there")
@pytest.mark.parametrize("grokfast", [False, True])
def test_cuda_graph_step_equals_the_eager_step(tmp_path, float64_one_thread, grokfast):
    """On a GPU: the pack trained through the captured CUDA graph ends where the eager pack ends (float64)."""
    extra = ["train.device=cuda", "train.eval_every=5", "train.sync_every=3"]
    if grokfast:
        extra += ["optim.grokfast.enabled=true", "optim.grokfast.alpha=0.9", "optim.grokfast.lamb=3"]
    graphed = train_packed(_pair(60, (*extra, "train.cuda_graph=true")), [tmp_path / "g0", tmp_path / "g1"])
    eager = train_packed(_pair(60, (*extra, "train.cuda_graph=false")), [tmp_path / "e0", tmp_path / "e1"])
    for i, (g, e) in enumerate(zip(graphed, eager)):
        assert g["device"].startswith("cuda")
        for key in ("final_train_loss", "final_val_loss", "final_val_acc"):
            assert g[key] == pytest.approx(e[key], abs=1e-6), (i, key)
        ga, ea = (read_metrics(tmp_path / f"{k}{i}" / "metrics.csv") for k in "ge")
        assert [r["train_loss"] for r in ga] == pytest.approx([r["train_loss"] for r in ea], abs=1e-6)


@pytest.fixture
def disk(tmpfs):
    return tmpfs("32m")


def test_members_left_at_different_epochs_resume_together(tmp_path, disk, float64_one_thread, capsys):
    """The disk fills during a periodic checkpoint: the first member's last.pt is written, the second's is refused
    partway, so the members are left a checkpoint apart; once space is freed the pack resumes together."""
    ck = ("train.latest_every=10", "train.checkpoint_every=10")
    straight_dirs, dirs = [tmp_path / "c", tmp_path / "d"], [disk / "a", disk / "b"]
    straight = train_packed(_pair(100, ck), straight_dirs)
    page = os.statvfs(disk).f_frsize
    ckpt = -(-(straight_dirs[0] / "checkpoints" / "last.pt").stat().st_size // page) * page  # in whole pages
    # before epoch 90's writes each member holds epoch_10..80, last.pt and last.prev.pt: 20 checkpoints in all.
    # With 2.5 more free, a writes epoch_90 and last.pt (then frees its old last.prev.pt); b writes epoch_90 and
    # has room for half its last.pt. The 2 pages are the metrics.csv files.
    filler = disk / "filler"
    filler.write_bytes(bytes(shutil.disk_usage(disk).free - 22 * ckpt - ckpt // 2 - 2 * page))
    with pytest.raises(StorageError) as err:
        train_packed(_pair(100, ck), dirs)
    assert err.value.strerror == (
        f"no space left writing {dirs[1] / 'checkpoints' / 'last.pt'}: No space left on device; run stopped at "
        "epoch 90, last good checkpoint: each member's checkpoints/last.pt (epoch 80)"
    )
    assert [load_checkpoint(d / "checkpoints" / "last.pt")["epoch"] for d in dirs] == [90, 80]
    for d in dirs:  # the rows of epoch 90 reached the disk before the checkpoints: the resume drops them
        checked_rows(d / "metrics.csv", list(range(10, 91, 10)))
    pruned = [tmp_path / "e", tmp_path / "f"]
    for d, copy in zip(dirs, pruned):
        shutil.copytree(d, copy)

    filler.unlink()
    resumed = train_packed(_pair(100, ck), dirs)
    assert f"{dirs[0]}: back from epoch 90 to 80, where the rest of the pack resumes" in capsys.readouterr().out
    for d, s_dir, r, s in zip(dirs, straight_dirs, resumed, straight):
        assert_same_rows(d / "metrics.csv", read_metrics(s_dir / "metrics.csv"))
        assert (r["status"], r["epochs_run"], r["final_train_loss"]) == (s["status"], 100, s["final_train_loss"])
        a, b = (load_checkpoint(x / "checkpoints" / "last.pt") for x in (d, s_dir))
        torch.testing.assert_close(a["model"], b["model"], atol=0, rtol=0)
        torch.testing.assert_close(a["optimizer"], b["optimizer"], atol=0, rtol=0)

    # the same state with the leading member's checkpoints of epoch 80 pruned by hand: no single fault leaves
    # this, so it is made here; the pack is refused in one line and nothing is written
    (pruned[0] / "checkpoints" / "last.prev.pt").unlink()
    (pruned[0] / "checkpoints" / "epoch_0000080.pt").unlink()
    before = [file_hashes(d) for d in pruned]
    with pytest.raises(ConfigError, match=f"^cannot pack: {re.escape(str(pruned[0]))} has no checkpoint of epoch 80"):
        train_packed(_pair(100, ck), pruned)
    assert [file_hashes(d) for d in pruned] == before


def test_the_loop_equals_a_pack_of_one_to_1e6(tmp_path, float64_one_thread):
    """train.engine=loop (the module, parameters as views of one row) against a vmapped pack of one."""
    for extra in ([], ["optim=sgd", "train.batch_size=100"]):
        cfg = [*BASE, *MEMBERS[1], *extra]
        loop = run(compose_cfg([*cfg, "train.engine=loop"]), tmp_path / f"loop{len(extra)}")
        pack = run(compose_cfg([*cfg, "train.engine=packed"]), tmp_path / f"pack{len(extra)}")
        assert loop["epochs_run"] == pack["epochs_run"] == 100
        a, b = (load_checkpoint(tmp_path / f"{k}{len(extra)}" / "checkpoints" / "last.pt") for k in ("loop", "pack"))
        torch.testing.assert_close(a["model"], b["model"], atol=1e-6, rtol=0)
        torch.testing.assert_close(a["optimizer"], b["optimizer"], atol=1e-6, rtol=0)
        assert loop["final_train_loss"] == pytest.approx(pack["final_train_loss"], abs=1e-6)


@pytest.mark.parametrize("optim", ["adam", "sgd"])
def test_any_optimizer_packs(tmp_path, float64_one_thread, optim):
    # the MLP: attention's key bias has an analytically zero gradient, whose rounding noise Adam's L2 form
    # normalises to full-size steps, so two summation orders part there at any precision
    extra = ["model=mlp", f"optim={optim}", "train.max_epochs=40"]
    cfgs = [compose_cfg([*BASE, *m, *extra]) for m in MEMBERS]
    packed = train_packed(cfgs, [tmp_path / f"m{i}" for i in range(len(cfgs))])
    for i, m in enumerate(MEMBERS):
        alone = run(compose_cfg([*BASE, *m, *extra]), tmp_path / f"s{i}")
        assert packed[i]["final_train_loss"] == pytest.approx(alone["final_train_loss"], abs=1e-6)
        a, b = (load_checkpoint(tmp_path / f"{k}{i}" / "checkpoints" / "last.pt") for k in "ms")
        torch.testing.assert_close(a["optimizer"], b["optimizer"], atol=1e-6, rtol=0)
