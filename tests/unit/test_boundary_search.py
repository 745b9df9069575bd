"""The boundary search on a ladder (grokpipe.sweep.plan, plain Python), checked against every monotone (and some
non-monotone) truth; the sweeper's settings."""

from __future__ import annotations

import itertools

import pytest

from grokpipe.core.errors import ConfigError
from grokpipe.sweep.plan import BoundarySettings, Search, interior
from hydra_plugins.grokpipe_plugins.boundary_sweeper import BoundarySweeper


def sweeper(**settings) -> BoundarySweeper:
    """A sweeper with these settings, its Hydra base class not initialised: Hydra's plugin scan may have loaded
    another copy of that base class in this process, which its __init__'s super() would then refuse."""
    made = BoundarySweeper.__new__(BoundarySweeper)
    made.__dict__.update(
        {"mode": "ratio", "values": None, "lo": 0.125, "hi": 8.0, "steps": 13, "sections": 2, "share": 0.5,
         "seeds": None, "screen": True, "max_rounds": 30, **settings}
    )  # fmt: skip
    return made


def run_search(truth: list[bool], k: int, screen_truth: list[bool] | None = None) -> tuple[Search, list[int]]:
    """Drive a Search to its end: probes get the screened verdict (first seed), confirmations the true one."""
    screen_truth = truth if screen_truth is None else screen_truth
    search, probed = Search(len(truth)), []
    for _ in range(100):
        probes, confirm = search.next(k, screen=True)
        if not probes and not confirm:
            return search, probed
        for i in probes:
            assert i not in search.verdicts, f"index {i} probed twice"
            search.verdicts[i] = screen_truth[i]
            probed.append(i)
        for i in confirm:
            search.verdicts[i] = truth[i]
            search.confirmed.add(i)
    raise AssertionError("the search did not settle in 100 rounds")


def test_interior_k_sections():
    assert interior(-1, 8, 2) == [4]  # round(3.5) = 4
    assert interior(-1, 8, 3) == [2, 5]
    assert interior(2, 4, 4) == [3]  # fewer points than sections: each once
    assert interior(3, 4, 2) == []


@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize("n", [1, 2, 5, 8, 13])
def test_finds_the_first_grokking_point_of_every_monotone_truth(n, k):
    for first in range(n + 1):  # first = n: nothing groks
        truth = [i >= first for i in range(n)]
        search, probed = run_search(truth, k)
        a, b, contra = search.bracket()
        assert (a, b, contra) == (first - 1, first, [])
        # both ends of the bracket are confirmed with every seed, where they exist
        assert {i for i in (a, b) if 0 <= i < n} <= search.confirmed
        if k == 2 and n > 1:  # the top, then bisection: about log2(n) + 1 probes
            assert len(probed) <= n.bit_length() + 1
        if first == n and k == 2:  # nothing groks: the top alone decides it
            assert probed == [n - 1]


def test_bisection_uses_fewer_points_than_the_grid():
    truth = [i >= 5 for i in range(13)]
    _, probed = run_search(truth, 2)
    assert probed == [12, 6, 2, 4, 5]  # the top, then bisection of the rest


def test_a_screen_overturned_by_the_seeds_moves_the_bracket():
    truth = [i >= 4 for i in range(8)]
    screened = [i >= 3 for i in range(8)]  # the first seed groks at 3, the seeds together do not
    search, _ = run_search(truth, 2, screened)
    assert search.bracket()[:2] == (3, 4)
    assert search.verdicts[3] is False and 3 in search.confirmed


def test_contradictions_are_reported_and_the_boundary_goes_above_the_highest_failure():
    search = Search(6)
    search.verdicts = {0: False, 1: True, 2: False, 3: True, 5: True}
    a, b, contra = search.bracket()
    assert (a, b, contra) == (2, 3, [1])


def test_every_verdict_pattern_settles():
    for bits in itertools.product([False, True], repeat=6):
        search, _ = run_search(list(bits), 2)
        a, b, _ = search.bracket()
        assert b - a <= 1 and (b == 6 or bits[b]) and (a == -1 or not bits[a])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "width"}, "hydra.sweeper.mode='width' is not allowed: ratio or wd"),
        ({"values": [1]}, "hydra.sweeper.values=[1]: at least two positive numbers"),
        ({"values": [1, -2]}, "hydra.sweeper.values=[1, -2]: at least two positive numbers"),
        ({"lo": 2.0, "hi": 1.0}, "hydra.sweeper.lo=2.0, hi=1.0: need 0 < lo < hi (or values: [...])"),
        ({"steps": 1}, "hydra.sweeper.steps=1 is not allowed: an integer in 2..1000"),
        ({"sections": 1}, "hydra.sweeper.sections=1 is not allowed: an integer in 2..64"),
        ({"max_rounds": 0}, "hydra.sweeper.max_rounds=0 is not allowed: an integer >= 1"),
    ],
)
def test_sweeper_settings_out_of_domain_are_one_line(kwargs, message):
    with pytest.raises(ConfigError) as refused:
        BoundarySettings.of(kwargs)
    assert str(refused.value) == message


def test_an_unknown_sweeper_setting_is_named():
    with pytest.raises(ConfigError, match=r"^hydra.sweeper.sectoins is not a setting of this sweeper: "):
        BoundarySettings.of({"sectoins": 3})
    assert BoundarySettings.of({"sections": 3, "_target_": "x"}).sections == 3


def test_the_default_ladder_is_geometric():
    ladder = BoundarySettings.of({"lo": 0.125, "hi": 8.0, "steps": 13}).ladder_values()
    assert ladder[0] == 0.125 and ladder[-1] == 8.0 and ladder[6] == 1.0 and len(ladder) == 13


@pytest.mark.parametrize(
    ("grok", "fail", "more"),
    [(0, 1, 1), (1, 0, 1), (1, 1, 1), (2, 0, 0), (0, 2, 0), (0, 0, 2)],
)
def test_only_the_seeds_that_can_still_decide_a_point_run(monkeypatch, grok, fail, more):
    made = sweeper(share=0.5)  # 3 seeds: a point groks when 2 do
    unrun = [0, 1, 2][grok + fail :]
    monkeypatch.setattr(made, "_tally", lambda *_: (grok, fail, unrun, None))
    assert made._need(3) == 2
    assert made._more_seeds({}, "1", 0, [0, 1, 2]) == unrun[:more]


def test_a_packed_search_keeps_one_pack_plan_across_its_rounds(tmp_path):
    """Each round's packs are numbered after the earlier rounds' and packs.json keeps them all (a round used to drop
    the plan and start again at pack 0, so a resumed pack job found another round's cells)."""
    import json

    from helpers import compose_cfg
    from omegaconf import OmegaConf

    from grokpipe.core.cells import PACKS, read_pack

    launched = []

    class Launcher:
        def launch(self, jobs, initial_job_idx):
            launched.append((initial_job_idx, [j[-1] for j in jobs]))
            return []

    tiny = ["model=mlp", "task.p=23", "logger=none", "optim.wd=1"]
    made = sweeper(mode="ratio", pack=True, max_members=None)
    made.launcher = Launcher()

    def compose(overrides, num):
        cfg = compose_cfg([*tiny, *overrides])
        OmegaConf.set_struct(cfg, False)
        cfg.hydra = {"sweep": {"subdir": str(num)}}
        return cfg

    made._compose = compose
    made.run_config = lambda cfg: OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    made.max_members = None
    made.save_run_config = lambda cfg, overrides, run_dir: None
    state = {"cells": [], "rounds": []}
    ladder = [(0.25, "model.d_model=8"), (1.0, "model.d_model=16")]
    made._launch(state, tmp_path, [("1", 1, 0), ("1", 1, 1)], tiny, ladder, 1)  # one shape: pack 0
    made._launch(state, tmp_path, [("1", 0, 0), ("1", 0, 1)], tiny, ladder, 2)  # another: pack 1
    assert launched == [(0, ["hydra.sweep.subdir=packs/0"]), (1, ["hydra.sweep.subdir=packs/1"])]
    assert [p["pack"] for p in json.loads((tmp_path / PACKS).read_text())] == [0, 1]
    assert read_pack(tmp_path, 0)["cells"] == [0, 1] and read_pack(tmp_path, 1)["cells"] == [2, 3]
