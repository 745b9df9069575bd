"""The split protocol: every preset and task follows its source (the split is the run's seed), a number gives one
split, and the sweep table never pools seeds on their own splits with seeds on one split."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import compose_cfg

from grokpipe.core import split
from grokpipe.sweep.summary import table
from grokpipe.tasks import build_task

PRESETS = sorted(p.stem for p in (Path(__file__).parents[2] / "conf" / "sweep").glob("*.yaml"))
TASKS = sorted(p.stem for p in (Path(__file__).parents[2] / "conf" / "task").glob("*.yaml"))


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_splits_by_the_runs_seed_as_its_source_does(preset):
    cfg = compose_cfg([f"sweep={preset}", "train.seed=3"])
    assert split.of_config(cfg.task) == split.SEED
    assert cfg.task.split_seed == 3


@pytest.mark.parametrize("task", TASKS)
def test_every_task_splits_by_the_seed_unless_given_a_number(task):
    assert split.of_config(compose_cfg([f"task={task}"]).task) == split.SEED
    fixed = compose_cfg([f"task={task}", "task.split_seed=0", "train.seed=5"])
    assert (split.of_config(fixed.task), fixed.task.split_seed) == (split.FIXED, 0)


def test_two_seeds_hold_out_different_samples_and_one_split_the_same():
    def val(*overrides):
        return build_task(compose_cfg(["task.p=23", *overrides]).task).split().val_x.tolist()

    assert val("train.seed=1") != val("train.seed=2")
    assert val("train.seed=1", "task.split_seed=0") == val("train.seed=2", "task.split_seed=0") == val()


@pytest.mark.parametrize(("raw", "expected"), [("${train.seed}", "seed"), ("${ train.seed }", "seed"), (0, "fixed"),
                                               (7, "fixed"), ("${oc.env:SEED}", "fixed"), (None, "fixed")])  # fmt: skip
def test_protocol_of_a_value_as_written(raw, expected):
    assert split.protocol(raw) == expected


def _cell(seed: int, protocol: str, split_seed: int, grok: int | None) -> dict:
    return {"ratio": 0.5, "wd": 1.0, "seed": seed, "split": protocol, "split_seed": split_seed,
            "status": "grokked" if grok else "completed", "grok_epoch": grok, "dir": None}  # fmt: skip


def test_the_table_keeps_the_protocols_in_separate_rows():
    cells = [_cell(s, "seed", s, 100 * (s + 1)) for s in range(3)] + [_cell(s, "fixed", 0, None) for s in range(3)]
    rows = table(cells)
    assert sorted((r["split"], r["n"], r["grokked"]) for r in rows) == [("by seed", 3, 3), ("fixed 0", 3, 0)]
    assert "both protocols" in split.sentence([c["split"] for c in cells])
    assert split.sentence(["seed", "seed"]).startswith("splits: by seed")
    assert split.sentence(["fixed"]).startswith("splits: fixed")
    assert split.label("fixed", [3, 0, 3]) == "fixed 0,3"


def test_a_run_from_before_the_field_is_read_from_its_config_as_written(tmp_path):
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text("task:\n  split_seed: ${train.seed}\ntrain:\n  seed: 2\n")
    assert split.of_run({"split_seed": 2}, tmp_path) == "seed"
    (tmp_path / ".hydra" / "config.yaml").write_text("task:\n  split_seed: 0\n")
    assert split.of_run({"split_seed": 0}, tmp_path) == "fixed"
    assert split.of_run({"split": "seed"}, None) == "seed" and split.of_run({}, tmp_path / "gone") is None
