"""Which runs can train as one pack: those whose configs differ only in the per-member keys.

Members of a pack share model, task, loss, optimiser kind, measures and training settings; each keeps its own seed,
split seed, lr, weight decay, warm-up and patience (`PER_MEMBER`), and its own run dir, outputs and W&B run.
"""

from __future__ import annotations

import json

from omegaconf import DictConfig, OmegaConf

from grokpipe.config.validate import measured_at, prepare
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


def group_keys(keys: list[str], max_members: int | None = None, caps: dict[str, int] | None = None) -> list[list[int]]:
    """Indices of `keys` grouped by equal key, in first-seen order, at most max_members each (or caps[key] for a key
    there: members per pack by shape)."""
    groups: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    out = []
    for key, g in groups.items():
        size = (caps or {}).get(key) or max_members or len(g)
        out += [g[k : k + size] for k in range(0, len(g), size)]
    return out


def group_by_shape(cfgs: list[DictConfig], max_members: int | None = None) -> list[list[int]]:
    """Indices of `cfgs` grouped into packable sets (equal shape_key), in first-seen order, at most max_members each."""
    for cfg in cfgs:
        prepare(cfg)
    return group_keys([shape_text(cfg) for cfg in cfgs], max_members)


# CPU packs against single runs, per member-epoch (step + evaluation every 10 epochs, default measures, full batch,
# fp32, one torch thread each, the pack computed as train.pack_forward=auto computes it on a CPU: batched for the
# transformer and the MLP, vmap for Nanda's model; scripts/bench_pack.py, docs/benchmarks.md "Where a pack's time
# goes"): model -> [(p of (a + b) mod p, so p^2 samples; d_model; best member count; pack speed over a single
# run's)]. A pack's gain falls as a member's work grows (validate.pack_work: samples x width), from launch-bound to
# bound by per-sample arithmetic: the rule reads the nearest measured point of at least this work.
CPU_PACK_MEASURED: dict[str, list[tuple[int, int, int, float]]] = {
    "transformer": [
        (23, 4, 32, 3.45), (23, 12, 32, 2.42), (23, 24, 8, 1.65), (23, 48, 8, 1.13), (23, 92, 8, 0.92),
        (97, 8, 8, 0.88), (97, 16, 8, 0.83), (97, 32, 32, 0.85),
    ],
    "mlp": [
        (23, 4, 8, 2.01), (23, 12, 8, 1.96), (23, 24, 8, 1.76), (23, 48, 8, 1.63), (23, 92, 8, 1.46),
        (97, 8, 8, 0.83), (97, 32, 8, 0.80),
    ],
    "nanda": [
        (23, 4, 32, 3.08), (23, 12, 32, 2.43), (23, 24, 32, 1.75), (23, 48, 8, 1.18), (23, 92, 8, 0.90),
        (113, 32, 8, 1.01), (113, 128, 8, 0.88),
    ],
}  # fmt: skip
# a CPU pack is chosen only where it trained at least this much faster per member (below it, two one-thread
# processes side by side, what the local launcher runs on two cores, give more)
CPU_PACK_MIN_GAIN = 1.1


def cpu_pack_members(model: str, d_model: int | None, samples: int) -> int:
    """Members per pack for CPU cells of `model` (its config's `name`) at this width on a task of `samples` samples
    (grokpipe.config.validate.task_samples): the measured best count where a pack paid at least CPU_PACK_MIN_GAIN at
    the nearest measured work at or above this one's (grokpipe.config.validate.measured_at), else 1 (one job per
    cell). Unmeasured models, and work beyond every measured point, get 1."""
    at = measured_at(CPU_PACK_MEASURED.get(model, []), samples, d_model)
    return at[2] if at is not None and at[3] >= CPU_PACK_MIN_GAIN else 1
