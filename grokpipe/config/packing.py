"""Which runs can train as one pack: those whose configs differ only in the per-member keys.

Members of a pack share model, task, loss, optimiser kind, measures and training settings; each keeps its own seed,
split seed, lr, weight decay, warm-up and patience (`PER_MEMBER`), and its own run dir, outputs and W&B run.
"""

from __future__ import annotations

import json

from omegaconf import DictConfig, OmegaConf

from grokpipe.core.errors import ConfigError
from grokpipe.optim import PER_MEMBER as OPTIM_PER_MEMBER

PER_MEMBER = ("train.seed", "task.split_seed", "train.patience", *(f"optim.{k}" for k in OPTIM_PER_MEMBER))
PER_RUN_GROUPS = ("logger", "hydra")


def _flatten(node, prefix: str = "") -> dict:
    out = {}
    for k, v in node.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def shape_key(cfg: DictConfig) -> dict:
    """The settings that must be equal for runs to train packed: the resolved config less PER_MEMBER and logger."""
    resolved = {k: OmegaConf.to_container(cfg[k], resolve=True) for k in cfg if k not in PER_RUN_GROUPS}
    return {k: v for k, v in _flatten(resolved).items() if k not in PER_MEMBER}


def check_packable(cfgs: list[DictConfig]) -> None:
    """Refuse a pack whose members (configs already checked and resolved: grokpipe.config.validate.prepare) differ in
    anything but PER_MEMBER (ConfigError)."""
    if not cfgs:
        raise ConfigError("cannot pack: no runs given")
    first = shape_key(cfgs[0])
    for i, cfg in enumerate(cfgs[1:], start=1):
        key = shape_key(cfg)
        for k in sorted(first.keys() | key.keys()):
            if first.get(k) != key.get(k):
                raise ConfigError(
                    f"cannot pack: {k} differs (run 0: {first.get(k)!r}, run {i}: {key.get(k)!r}); "
                    f"packed runs may differ only in {', '.join(PER_MEMBER)}"
                )


def shape_text(cfg: DictConfig) -> str:
    """shape_key as text, equal for configs that can share a pack."""
    return json.dumps(shape_key(cfg), sort_keys=True, default=str)


def group_keys(keys: list[str], max_members: int | None = None) -> list[list[int]]:
    """Indices of `keys` grouped by equal key, in first-seen order, at most max_members each."""
    groups: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    size = max_members or len(keys) or 1
    return [g[k : k + size] for g in groups.values() for k in range(0, len(g), size)]


def group_by_shape(cfgs: list[DictConfig], max_members: int | None = None) -> list[list[int]]:
    """Indices of `cfgs` grouped into packable sets (equal shape_key), in first-seen order, at most max_members each."""
    from grokpipe.config.validate import prepare

    for cfg in cfgs:
        prepare(cfg)
    return group_keys([shape_text(cfg) for cfg in cfgs], max_members)


# CPU packs against single runs, per member-epoch (step + evaluation every 10 epochs, default measures, p=97, full
# batch, fp32, one torch thread each; scripts/bench_pack.py, docs/benchmarks.md "Where a pack's time goes"):
# model -> {d_model: (best member count, pack speed over a single run's)}. A model or width not here is unmeasured.
CPU_PACK_MEASURED: dict[str, dict[int, tuple[int, float]]] = {
    "transformer": {8: (8, 0.88), 16: (8, 0.83), 32: (32, 0.85)},
}
# a CPU pack is chosen only where it trained at least this much faster per member (below it, two one-thread
# processes side by side, what the local launcher runs on two cores, give more)
CPU_PACK_MIN_GAIN = 1.1


def cpu_pack_max_width(model: str) -> int:
    """The widest measured d_model at which a CPU pack of `model` pays (CPU_PACK_MIN_GAIN); 0 where none does."""
    paying = [d for d, (_, gain) in CPU_PACK_MEASURED.get(model, {}).items() if gain >= CPU_PACK_MIN_GAIN]
    return max(paying, default=0)


def cpu_pack_members(model: str, d_model: int | None) -> int:
    """Members per pack for CPU cells of `model` (its config's `name`) at `d_model`: the measured best count where a
    pack pays at this width or a wider one, else 1 (one job per cell). Unmeasured models and widths get 1."""
    measured = CPU_PACK_MEASURED.get(model, {})
    if d_model is None or d_model > cpu_pack_max_width(model):
        return 1
    at = min((d for d in measured if d >= d_model), default=None)
    return measured[at][0] if at is not None else 1
