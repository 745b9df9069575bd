"""Labels equal direct arithmetic on every pair; splits are disjoint, complete and deterministic."""

from __future__ import annotations

import itertools

import pytest
import torch
from helpers import compose_cfg

from grokpipe.tasks import build_task
from grokpipe.tasks.modular import OPS, ModularTask
from grokpipe.tasks.s5 import S5Task

DIRECT = {
    "add": lambda a, b, p: (a + b) % p,
    "sub": lambda a, b, p: (a - b) % p,
    "mul": lambda a, b, p: (a * b) % p,
    "div": lambda a, b, p: next(c for c in range(p) if (c * b) % p == a),
    "x2_y2": lambda a, b, p: (a * a + b * b) % p,
    "x2_xy_y2": lambda a, b, p: (a * a + a * b + b * b) % p,
    "x2_xy_y2_x": lambda a, b, p: (a * a + a * b + b * b + a) % p,
    "x3_xy": lambda a, b, p: (a**3 + a * b) % p,
    "x3_xy2_y": lambda a, b, p: (a**3 + a * b * b + b) % p,
}
TASKS = [f"mod_{op}" for op in OPS] + ["s5"]


def modular(op: str, p: int, **kw) -> ModularTask:
    return ModularTask(op, p, kw.get("train_frac", 0.5), kw.get("split_seed", 0), 0.95, 0.99)


@pytest.mark.parametrize("op", sorted(OPS))
@pytest.mark.parametrize("p", [7, 23, 97])
def test_labels_match_direct_arithmetic(op, p):
    task = modular(op, p)
    a, b, y = task.pairs()
    assert task.size == task.spec.n_outputs == p and task.spec.vocab_size == p + 1
    expected_pairs = [(i, j) for i in range(p) for j in range(p) if op != "div" or j != 0]
    assert list(zip(a.tolist(), b.tolist())) == expected_pairs
    assert y.tolist() == [DIRECT[op](i, j, p) for i, j in expected_pairs]
    assert len(y) == ModularTask.n_samples_of(compose_cfg([f"task=mod_{op}", f"task.p={p}"]).task)


def test_s5_is_permutation_composition():
    perms = list(itertools.permutations(range(5)))
    task = S5Task(0.5, 0, 0.95, 0.99)
    a, b, y = task.pairs()
    assert task.size == 120 and len(y) == 120 * 120
    for i, j, k in zip(a.tolist()[::97], b.tolist()[::97], y.tolist()[::97]):
        assert perms[k] == tuple(perms[i][perms[j][x]] for x in range(5))


@pytest.mark.parametrize("name", TASKS)
def test_split_disjoint_complete_deterministic(name):
    p = [] if name == "s5" else ["task.p=23"]

    def cfg(seed: int):
        return compose_cfg([f"task={name}", *p, "task.train_frac=0.4", f"task.split_seed={seed}"]).task

    t1, t2, t3 = build_task(cfg(3)), build_task(cfg(3)), build_task(cfg(4))
    d1, d2, d3 = t1.split(), t2.split(), t3.split()
    a, b, y = t1.pairs()
    train = {tuple(r) for r in d1.train_x[:, :2].tolist()}
    val = {tuple(r) for r in d1.val_x[:, :2].tolist()}
    assert not train & val
    assert train | val == set(zip(a.tolist(), b.tolist()))
    assert len(d1.train_y) == round(0.4 * len(y))
    assert torch.equal(d1.train_x, d2.train_x) and torch.equal(d1.val_y, d2.val_y)
    assert not torch.equal(d1.train_x, d3.train_x)
    assert (d1.train_x[:, 2] == t1.spec.vocab_size - 1).all()  # the '=' token


def test_criterion_reads_the_tasks_metrics():
    task = modular("add", 7)
    row = {"train_acc": torch.tensor([0.995, 0.5]), "val_acc": torch.tensor([0.96, 0.99])}
    assert task.criterion(row, "memorize").tolist() == [True, False]
    assert task.criterion(row, "generalize").tolist() == [True, True]
    assert task.criterion_text() == "generalised: val_acc >= 0.95; memorised: train_acc >= 0.99"


def test_unknown_op_is_refused():
    with pytest.raises(ValueError, match="task.op='pow'"):
        modular("pow", 7)
