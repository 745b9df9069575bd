"""The networks grokpipe trains. Each is one file here plus one YAML in conf/model/ whose `_target_` names its class.

A model is built from its config node and the task's spec (`grokpipe.tasks.TaskSpec`): it takes token sequences
[N, spec.seq_len] and returns outputs [N, spec.n_outputs].
"""

from __future__ import annotations

from torch import nn

from grokpipe.core.schema import Float, Int, Nullable, Str
from grokpipe.tasks import TaskSpec

BASE_SCHEMA = {
    "_target_": Str(),
    "name": Str(),
    "d_model": Int(1, 2**20),
    "ratio": Nullable(Float(0, 1e6, lo_open=True)),  # d_model = ratio * task size when set
}
ATTENTION_SCHEMA = {**BASE_SCHEMA, "n_layers": Int(1, 64), "n_heads": Int(1, 1024), "ff_mult": Int(1, 64)}
MLP_SCHEMA = {**BASE_SCHEMA, "hidden": Int(1, 2**24)}


def operands(spec: TaskSpec) -> int:
    """Positions that carry operands: all but a trailing query token ('=')."""
    return spec.seq_len - int(spec.query_token)


def build_model(model_cfg, spec: TaskSpec) -> nn.Module:
    """Instantiate the model named by `model._target_` for a task's spec."""
    from hydra.utils import get_class
    from omegaconf import OmegaConf

    kwargs = OmegaConf.to_container(model_cfg, resolve=True)
    return get_class(kwargs.pop("_target_"))(spec=spec, **kwargs)
