"""Bad input is refused before any training: one line naming the key and what is allowed, non-zero exit."""

from __future__ import annotations

import pytest
from conftest import compose_cfg, launch

from grokpipe.errors import ConfigError
from grokpipe.validate import validate

BAD = [
    (["model.d_model=30"], "model.d_model=30", "divisible by model.n_heads=4"),
    (["task.p=96"], "task.p=96", "prime"),
    (["task.train_frac=0"], "task.train_frac=0", "between 0 and 1"),
    (["task.train_frac=1.5"], "task.train_frac=1.5", "between 0 and 1"),
    (["train.max_epochs=0"], "train.max_epochs=0", "positive"),
    (["optim.lr=0"], "optim.lr=0", "> 0"),
    (["optim.lr=-1e-3"], "optim.lr=-0.001", "> 0"),
    (["optim.wd=-1"], "optim.wd=-1", ">= 0"),
    (["task.op=pow"], "task.op='pow'", "one of add, sub"),
    (["model.d_model=abc"], "model.d_model='abc'", "number"),
    (["train.sync_every=0"], "train.sync_every=0", "positive"),
    (["train.engine=fast"], "train.engine='fast'", "one of auto, loop, packed"),
    (["train.cuda_graph=maybe"], "train.cuda_graph='maybe'", "true or false"),
]


@pytest.mark.parametrize("overrides,key,allowed", BAD)
def test_bad_value_is_refused_in_one_line(tmp_path, overrides, key, allowed):
    result = launch([*overrides, "logger=none", f"hydra.run.dir={tmp_path}/run"], cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert key in lines[0] and allowed in lines[0]
    assert not (tmp_path / "run" / "metrics.csv").exists()


@pytest.mark.parametrize("overrides,key,allowed", BAD)
def test_validate_raises_config_error(overrides, key, allowed):
    with pytest.raises(ConfigError, match=allowed.replace("+", r"\+").replace(">", ">")):
        validate(compose_cfg(overrides))


def test_s5_needs_no_prime():
    validate(compose_cfg(["task=s5", "task.p=1"]))
