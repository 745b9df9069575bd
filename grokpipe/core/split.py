"""The split protocol: whether a run's train/val split follows its seed, and how a sweep's rows say so.

`task.split_seed: ${train.seed}` (every task's default, and seed 003's protocol: its train.py splits by the run's
seed) makes seeds vary both the initialisation and which samples are held out: protocol `seed`. A number makes
every seed train on that one split: protocol `fixed`. The two answer different questions (the spread over seeds
of a grok epoch or a share grokked is the spread over splits too, or not), so a summary never pools them.

A run's summary.json records its protocol as `split`; a run from before that field is read from its
.hydra/config.yaml as written. Imports nothing heavy: the sweep summary and the results database read it.
"""

from __future__ import annotations

from pathlib import Path

SPLIT_BY_SEED = "${train.seed}"
SEED, FIXED = "seed", "fixed"


def protocol(raw) -> str:
    """`seed` when task.split_seed, as written (unresolved), is the run's seed; `fixed` for anything else."""
    return SEED if isinstance(raw, str) and raw.replace(" ", "") == SPLIT_BY_SEED else FIXED


def of_config(task_cfg) -> str:
    """The protocol of a composed (unresolved) task config node."""
    node = task_cfg._get_node("split_seed") if "split_seed" in task_cfg else None
    return protocol(node._value() if node is not None else None)


def of_run(summary: dict, run_dir: str | Path | None) -> str | None:
    """A run's protocol: its summary's `split`, else its .hydra/config.yaml as written; None when neither says."""
    if summary.get("split") in (SEED, FIXED):
        return summary["split"]
    if run_dir is None:
        return None
    import yaml  # the file as written: an interpolation stays text

    try:
        cfg = yaml.safe_load((Path(run_dir) / ".hydra" / "config.yaml").read_text())
        return protocol(cfg["task"]["split_seed"])
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return None


def label(split: str | None, split_seeds) -> str:
    """A table row's split: `by seed`, or `fixed` with the split seeds its runs used (`fixed 0`, `fixed 0,3`)."""
    if split == SEED:
        return "by seed"
    seeds = sorted({s for s in split_seeds if s is not None})
    return f"fixed {','.join(map(str, seeds))}" if seeds else "-"


def sentence(splits: list[str | None]) -> str:
    """The line under a sweep's table: which protocol its rows used."""
    known = sorted({s for s in splits if s is not None})
    if known == [SEED]:
        return "splits: by seed (task.split_seed follows train.seed): seeds vary init and split"
    if known == [FIXED]:
        return "splits: fixed (task.split_seed is a number): seeds vary init only, on the split each row names"
    if known:
        return "splits: both protocols in this sweep, in separate rows (column split): by seed and fixed"
    return "splits: unknown (no cell recorded its split)"
