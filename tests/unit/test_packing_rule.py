"""The CPU packing rule: members per pack by model, width and task size, from the measured table alone; and how
pack jobs fill a launcher's slots."""

from __future__ import annotations

from grokpipe.config import packing
from grokpipe.config.packing import cpu_pack_members, group_keys
from grokpipe.sweep.plan import fill_slots


def test_the_rule_reads_the_nearest_measured_work_at_or_above(monkeypatch):
    # p=10: 100 samples, p=30: 900; work = samples x d_model
    table = {"m": [(10, 16, 8, 1.2), (10, 8, 32, 2.5), (10, 64, 8, 0.9), (30, 4, 16, 1.5)]}
    monkeypatch.setattr(packing, "CPU_PACK_MEASURED", table)
    # works 400, 800 read (10, 8) at 800; 1200, 1600 read (10, 16); 3200 reads (30, 4) at 3600; 6400 (10, 64)
    got = [cpu_pack_members("m", d, 100) for d in (4, 8, 12, 16, 32, 64)]
    assert got == [32, 32, 8, 8, 16, 1]
    assert cpu_pack_members("m", 128, 100) == 1  # beyond every measured work: unmeasured
    assert cpu_pack_members("m", 4, 900) == 16 and cpu_pack_members("m", 4, 100) == 32  # the task's size counts
    assert cpu_pack_members("m", None, 100) == 1 and cpu_pack_members("other", 8, 100) == 1


def test_as_measured_packs_pay_at_p23_small_widths_not_at_p97():
    assert cpu_pack_members("transformer", 4, 23 * 23) > 1 and cpu_pack_members("transformer", 24, 23 * 23) > 1
    assert cpu_pack_members("transformer", 92, 23 * 23) == 1
    assert [cpu_pack_members("transformer", d, 97 * 97) for d in (8, 16, 32, 128)] == [1, 1, 1, 1]


def test_caps_by_key_and_slots_filled_costliest_first():
    keys = ["a", "a", "a", "a", "a", "b", "b", "c"]
    assert group_keys(keys, None, {"a": 2, "b": 1}) == [[0, 1], [2, 3], [4], [5], [6], [7]]
    assert group_keys(keys, 3) == [[0, 1, 2], [3, 4], [5, 6], [7]]
    cost = {i: 1.0 for i in range(8)} | {7: 10.0}
    # one pack of five on four slots: halved until four jobs, the costliest (cell 7 alone) first
    packs = fill_slots([[0, 1, 2, 3, 4], [7]], 4, lambda p: sum(cost[i] for i in p))
    assert packs == [[7], [0, 1], [3, 4], [2]]
    assert fill_slots([[0], [1]], 4, len) == [[0], [1]]  # nothing left to split
    assert fill_slots([[0, 1, 2]], 1, len) == [[0, 1, 2]]  # one slot: the pack whole
