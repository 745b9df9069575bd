"""Every option of every config group composes, validates and builds."""

from __future__ import annotations

import pytest
from helpers import CONF, compose_cfg

from grokpipe.config.validate import prepare, task_size
from grokpipe.models import build_model
from grokpipe.tasks import TaskSpec

GROUPS = {
    g: sorted(p.stem for p in (CONF / g).glob("*.yaml"))
    for g in ("model", "task", "loss", "optim", "measures", "train", "logger")
}


def test_groups_have_the_documented_options():
    assert {"transformer", "nanda", "mlp", "tied_mlp", "prieto_mlp"} <= set(GROUPS["model"])
    assert {"adamw", "adam", "sgd", "ortho_adamw", "muon"} <= set(GROUPS["optim"])
    assert {"wandb", "none"} <= set(GROUPS["logger"])
    assert {"mod_add", "mod_sub", "mod_mul", "mod_div", "s5"} <= set(GROUPS["task"])
    assert len([t for t in GROUPS["task"] if t.startswith("mod_x")]) == 5  # Power et al.'s polynomials
    assert {"cross_entropy", "stablemax"} <= set(GROUPS["loss"])
    assert {"loss", "task_metrics", "weight_norm", "lr"} <= set(GROUPS["measures"])


# the options of a task with real targets compose with each other (the defaults are classification's)
REAL = {"task": "frac_x", "model": "causal_transformer", "loss": "mse"}


@pytest.mark.parametrize("group,option", [(g, o) for g, opts in GROUPS.items() for o in opts])
def test_option_composes_and_validates(group, option):
    cfg = compose_cfg([f"{group}={option}"] if group != "measures" else [f"measures=[loss,task_metrics,{option}]"])
    if REAL.get(group) == option:
        cfg = compose_cfg([f"{g}={o}" for g, o in REAL.items()])
    prepare(cfg)
    assert cfg.model.d_model > 0 and task_size(cfg) > 0


def test_default_run_is_the_seed003_transformer_family():
    cfg = compose_cfg()
    assert cfg.model.name == "transformer" and cfg.model.n_layers == 2 and cfg.model.n_heads == 4
    assert cfg.optim.name == "adamw" and cfg.optim.lr == 1e-3 and list(cfg.optim.betas) == [0.9, 0.98]
    assert cfg.task.op == "add" and cfg.task.train_frac == 0.5


def test_seed003_setting_is_one_override_away():
    cfg = compose_cfg(["sweep=seed003"])
    assert (cfg.task.p, cfg.model.d_model, cfg.optim.wd, cfg.optim.lr) == (97, 128, 1.0, 1e-3)


@pytest.mark.parametrize("model", GROUPS["model"])
def test_model_builds_at_its_width(model):
    cfg = compose_cfg([f"model={model}", "model.d_model=32"])
    net = build_model(cfg.model, TaskSpec(vocab_size=98, seq_len=3, n_outputs=97, query_token=True))
    rows = 2 * 98 if model == "prieto_mlp" else 98  # its first layer: one row per (operand position, token)
    assert net.tok.weight.shape == (rows, 32)
