"""Losses: each one file here plus one YAML in conf/loss/ whose `_target_` names its class.

A loss maps member outputs [M, N, ...] and targets [M, N, ...] to one mean loss per member [M] (members are
independent, so the sum of these is what a packed step differentiates). `output` says which task output it fits.
"""

from __future__ import annotations

from omegaconf import DictConfig

from grokpipe.core.schema import Str


class Loss:
    SCHEMA = {"_target_": Str(), "name": Str()}
    output: str = "classes"  # the task output kind this loss is defined on
    name: str = "loss"

    def __call__(self, out, y):
        raise NotImplementedError


def build_loss(loss_cfg: DictConfig) -> Loss:
    from hydra.utils import get_class

    return get_class(loss_cfg._target_)(**{k: v for k, v in loss_cfg.items() if k not in ("_target_", "name")})
