"""Labels equal direct arithmetic on every pair; splits are disjoint, complete and deterministic."""

from __future__ import annotations

import itertools

import pytest
import torch

from grokpipe.tasks import MODULAR_OPS, OPS, all_pairs, make_dataset

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


@pytest.mark.parametrize("op", sorted(MODULAR_OPS))
@pytest.mark.parametrize("p", [7, 23, 97])
def test_labels_match_direct_arithmetic(op, p):
    a, b, y, n = all_pairs(op, p)
    assert n == p
    expected_pairs = [(i, j) for i in range(p) for j in range(p) if op != "div" or j != 0]
    assert list(zip(a.tolist(), b.tolist())) == expected_pairs
    assert y.tolist() == [DIRECT[op](i, j, p) for i, j in expected_pairs]


def test_s5_is_permutation_composition():
    perms = list(itertools.permutations(range(5)))
    a, b, y, n = all_pairs("s5", 0)
    assert n == 120 and len(y) == 120 * 120
    for i, j, k in zip(a.tolist()[::97], b.tolist()[::97], y.tolist()[::97]):
        assert perms[k] == tuple(perms[i][perms[j][x]] for x in range(5))


@pytest.mark.parametrize("op", OPS)
def test_split_disjoint_complete_deterministic(op):
    d1 = make_dataset(op, 23, 0.4, split_seed=3)
    d2 = make_dataset(op, 23, 0.4, split_seed=3)
    d3 = make_dataset(op, 23, 0.4, split_seed=4)
    a, b, y, _ = all_pairs(op, 23)
    train = {tuple(r) for r in d1.train_x[:, :2].tolist()}
    val = {tuple(r) for r in d1.val_x[:, :2].tolist()}
    assert not train & val
    assert train | val == set(zip(a.tolist(), b.tolist()))
    assert len(d1.train_y) == round(0.4 * len(y))
    assert torch.equal(d1.train_x, d2.train_x) and torch.equal(d1.val_y, d2.val_y)
    assert not torch.equal(d1.train_x, d3.train_x)
    assert (d1.train_x[:, 2] == d1.n_classes).all()  # the '=' token


def test_unknown_op_is_refused():
    with pytest.raises(ValueError, match="task.op='pow'"):
        all_pairs("pow", 7)
