"""A run's checkpoints, in one place: what one holds (`Checkpoint`), its file names, save, load and listing.

checkpoints/last.pt          the latest (every train.latest_every epochs and at the end)
checkpoints/last.prev.pt     the one before it, kept until a new last.pt is safe (a write failing at any byte)
checkpoints/epoch_NNNNNNN.pt every train.checkpoint_every epochs, kept

Every file is a plain dict of tensors and plain values, so it loads with `torch.load(..., weights_only=True)`: a
results dir from elsewhere cannot run code. The loop, the run record, analysis, the LLC and reproduce read through
this module; the writes go through grokpipe.core.outputs' atomic_write (a full disk leaves the previous file whole).
"""

from __future__ import annotations

import random
import re
import sys
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch

from grokpipe.core.outputs import atomic_write

DIR = "checkpoints"
LAST = "last.pt"
PREVIOUS = "last.prev.pt"
KEPT = re.compile(r"epoch_(\d+)\.pt")
REQUIRED = ("model", "optimizer", "epoch")  # a file without them is damaged, or not a checkpoint


def kept_name(epoch: int) -> str:
    return f"epoch_{epoch:07d}.pt"


@dataclass(frozen=True)
class Checkpoint:
    """What a checkpoint holds. `optimizer` is this run's share of the optimiser state (its step count and its
    `[P]` state tensors); `shuffle` the minibatch order's state; `rng` every global RNG (`rng_state`); `config` the
    identity of the config that made it (grokpipe.run.record.identity): a checkpoint of another never resumes."""

    model: dict
    optimizer: dict
    epoch: int
    shuffle: dict | None = None
    rng: dict | None = None
    elapsed: float = 0.0
    status: str | None = None
    config: dict | None = None

    def state(self) -> dict:
        """The file's contents (no copy of the tensors)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_state(cls, state: dict) -> Checkpoint:
        """From a loaded file; ValueError naming what is missing when it is not a checkpoint."""
        if not isinstance(state, dict) or not set(REQUIRED) <= set(state):
            raise ValueError(f"not a checkpoint: {', '.join(k for k in REQUIRED if k not in (state or {}))} missing")
        return cls(**{f.name: state[f.name] for f in fields(cls) if f.name in state})


def rng_state() -> dict:
    """Every RNG as tensors and plain values, so the checkpoint loads with weights_only=True."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    numpy_state = (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss))
    state = {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, state: dict | Checkpoint) -> None:
    """A kept checkpoint (epoch_NNNNNNN.pt), written whole or not at all."""
    state = state.state() if isinstance(state, Checkpoint) else state
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda fh: torch.save(state, fh))


def save_latest(path: Path, state: dict | Checkpoint) -> None:
    """Write checkpoints/last.pt; the one it replaces becomes last.prev.pt only once the new one is safe, so a
    failure at any byte of the write leaves last.pt as it was."""
    state = state.state() if isinstance(state, Checkpoint) else state
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda fh: torch.save(state, fh), keep_previous=path.with_name(PREVIOUS))


def save(ckpt_dir: Path, kind: str, checkpoint: Checkpoint) -> None:
    """`kind` last: last.pt (and last.prev.pt); kept: epoch_NNNNNNN.pt."""
    if kind == "last":
        save_latest(ckpt_dir / LAST, checkpoint)
    else:
        save_checkpoint(ckpt_dir / kept_name(checkpoint.epoch), checkpoint)


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    """A checkpoint file's contents. Tensors and plain containers only: a checkpoint from elsewhere cannot run code."""
    return torch.load(path, map_location=map_location, weights_only=True)


def read(path: Path, map_location="cpu") -> Checkpoint:
    """A checkpoint file as its record; ValueError (or torch's error for a damaged file) when it is not one."""
    return Checkpoint.from_state(load_checkpoint(path, map_location))


def load_latest(ckpt_dir: Path, map_location="cpu") -> Checkpoint | None:
    """The newest readable checkpoint: last.pt, else last.prev.pt, else the newest epoch_*.pt; None if none.

    A damaged file (torn by a kill, truncated, corrupted) is skipped with a message naming it."""
    candidates = [ckpt_dir / LAST, ckpt_dir / PREVIOUS, *sorted(ckpt_dir.glob("epoch_*.pt"), reverse=True)]
    damaged = []
    for path in candidates:
        if not path.exists():
            continue
        try:
            found = read(path, map_location)
        except Exception as exc:  # any damage means: try the one before
            damaged.append(f"{path.name} ({type(exc).__name__})")
            continue
        if damaged:
            print(
                f"warning: unreadable checkpoint {', '.join(damaged)}; resuming from {path.name} (epoch {found.epoch})",
                file=sys.stderr,
                flush=True,
            )
        return found
    if damaged:
        print(f"warning: no readable checkpoint ({', '.join(damaged)}); starting from scratch", file=sys.stderr)
    return None


def load_at(ckpt_dir: Path, epoch: int, map_location="cpu") -> Checkpoint | None:
    """A readable checkpoint of exactly `epoch` (last.pt, last.prev.pt or epoch_*.pt); None if there is none."""
    for path in [ckpt_dir / LAST, ckpt_dir / PREVIOUS, ckpt_dir / kept_name(epoch)]:
        if not path.exists():
            continue
        try:
            found = read(path, map_location)
        except Exception:  # damaged: not this one
            continue
        if found.epoch == epoch:
            return found
    return None


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(epoch, path) of every kept checkpoint of a run, in epoch order, then last.pt unless its epoch is listed."""
    ckpt_dir = Path(run_dir) / DIR
    found = sorted((int(m.group(1)), p) for p in ckpt_dir.glob("epoch_*.pt") if (m := KEPT.fullmatch(p.name)))
    last = ckpt_dir / LAST
    if last.exists():
        epoch = int(load_checkpoint(last)["epoch"])
        if epoch not in {e for e, _ in found}:
            found.append((epoch, last))
    return sorted(found)


def by_epoch(run_dir: Path) -> dict[int, Path]:
    """Every checkpoint file of a run by the epoch it holds (a kept one first where two hold the same epoch)."""
    found: dict[int, Path] = {}
    for path in sorted((Path(run_dir) / DIR).glob("*.pt")):
        if path.name.startswith("."):  # a temp file of a write in flight
            continue
        try:
            found.setdefault(int(load_checkpoint(path)["epoch"]), path)
        except Exception:  # damaged or foreign: not compared
            continue
    return found
