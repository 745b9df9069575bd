"""Bad input is refused before any training: one line naming the key and what is allowed, non-zero exit."""

from __future__ import annotations

import pytest
from helpers import compose_cfg, launch

from grokpipe.config.validate import prepare
from grokpipe.core.errors import ConfigError

BAD = [
    (["model.d_model=30"], "model.d_model=30", "divisible by model.n_heads=4"),
    (["task.p=96"], "task.p=96", "prime"),
    (["task.train_frac=0"], "task.train_frac=0", "in (0, 1)"),
    (["task.train_frac=1.5"], "task.train_frac=1.5", "in (0, 1)"),
    (["train.max_epochs=0"], "train.max_epochs=0", "integer in 1..1000000000"),
    (["optim.lr=0"], "optim.lr=0", "> 0"),
    (["optim.lr=-1e-3"], "optim.lr=-0.001", "> 0"),
    (["optim.wd=-1"], "optim.wd=-1", "in [0, 10000]"),
    (["task.op=pow"], "task.op='pow'", "one of add, sub"),
    (["model.d_model=abc"], "model.d_model='abc'", "integer"),
    (["train.sync_every=0"], "train.sync_every=0", "integer in 1..1000000"),
    (["train.engine=fast"], "train.engine='fast'", "one of auto, loop, packed"),
    (["model=nanda", "train.pack_forward=batched"], "train.pack_forward='batched'", "no hand-batched forward"),
    (["train.cuda_graph=maybe"], "train.cuda_graph='maybe'", "true or false"),
    (["optim.betas=[1.5,0.9]"], "optim.betas[0]=1.5", "in [0, 1)"),
    (["optim.betas=[0.9]"], "optim.betas=[0.9]", "list of 2 values"),
    (["optim.lr=inf"], "optim.lr=inf", "finite"),
    (["optim.wd=nan"], "optim.wd=nan", "finite"),
    (["model.ratio=inf"], "model.ratio=inf", "finite"),
    (["optim=sgd", "optim.momentum=-0.5"], "optim.momentum=-0.5", "in [0, 1)"),
    (["train.seed=-1"], "train.seed=-1", "integer in 0.."),
    (["task.p=100000000003"], "task.p=100000000003", "integer in 2..2147483647"),
    (["+optim.foo=1"], "optim.foo", "optim has the keys"),
    (["measures=[loss]"], "measures.task_metrics", "stopping rule"),
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
    with pytest.raises(ConfigError) as err:
        prepare(compose_cfg(overrides))
    assert key in str(err.value) and allowed in str(err.value) and "\n" not in str(err.value)


def test_s5_has_no_prime():
    prepare(compose_cfg(["task=s5"]))
    with pytest.raises(ConfigError, match="task.p is not allowed"):
        prepare(compose_cfg(["task=s5", "+task.p=7"]))


@pytest.mark.parametrize("override", ["task.p=1000003", "model.d_model=100000"])
def test_a_run_that_cannot_fit_is_refused_where_it_trains(tmp_path, override):
    result = launch([override, "logger=none", f"hydra.run.dir={tmp_path}/run"], cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "this run needs about" in line and "cpu has" in line and "available" in line
    assert not (tmp_path / "run" / "metrics.csv").exists()


@pytest.mark.parametrize(("ratio", "d_model"), [(0.001, 4), (0.04, 4)])
def test_a_width_far_from_the_ratio_asked_is_refused(ratio, d_model):
    """p=47 with 4 heads: the nearest width is 4 (ratio 0.085), more than 2x from what was asked."""
    with pytest.raises(ConfigError) as err:
        prepare(compose_cfg([f"model.ratio={ratio}", "logger=none"]))
    line = str(err.value)
    assert line.startswith(f"model.ratio={ratio} is not allowed") and f"d_model {d_model}, ratio 0.0851" in line
    prepare(compose_cfg(["model.ratio=0.06", "logger=none"]))  # 0.085 is within 2x of 0.06: allowed
