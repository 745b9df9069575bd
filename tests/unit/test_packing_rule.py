"""The CPU packing rule: members per pack and the widest paying width, from the measured table alone."""

from __future__ import annotations

from grokpipe.config import packing
from grokpipe.config.packing import cpu_pack_max_width, cpu_pack_members


def test_the_rule_follows_the_measured_table(monkeypatch):
    monkeypatch.setattr(packing, "CPU_PACK_MEASURED", {"m": {8: (32, 1.6), 16: (16, 1.2), 32: (8, 0.9)}})
    assert cpu_pack_max_width("m") == 16
    assert [cpu_pack_members("m", d) for d in (4, 8, 12, 16, 20, 32, None)] == [32, 32, 16, 16, 1, 1, 1]
    assert cpu_pack_max_width("other") == 0 and cpu_pack_members("other", 8) == 1


def test_as_measured_no_cpu_width_packs():
    assert cpu_pack_max_width("transformer") == 0
    assert cpu_pack_members("transformer", 8) == 1
