"""The memory a run needs, checked against the device it is about to train on (grokpipe.run.device).

Data, parameters with their gradients and optimiser state, and one batch's activations, counted from the config,
the run's task (built once, for training) and the model: a shape-only copy on the meta device counts its parameters;
a small model's activations are counted on the first member's own model (the one that trains), a large one's on the
meta copy. Times the members of a pack.
"""

from __future__ import annotations

from contextlib import contextmanager

from omegaconf import DictConfig

from grokpipe.config.validate import PARTS, part_class
from grokpipe.core.errors import ConfigError
from grokpipe.run.device import available_bytes

MODEL_SIZE_KEYS = ("d_model", "hidden", "hidden_size", "n_layers", "ff_mult")


def check_memory(cfgs: list[DictConfig], device, task, model=None) -> bool:
    """Refuse runs whose data, parameters, optimiser state and full-batch activations cannot fit the device
    they are about to train on together (a pack of M needs M times one run). `task`: the first member's, built once
    for its training; `model`: a member's own model, once built. Returns False, having checked nothing, when the model
    is small enough that its activations are to be counted on that real model: call again with it."""
    cfg = cfgs[0]
    classes = {group: part_class(cfg, group) for group in PARTS}
    one = estimate_bytes(cfg, classes, task, model)
    if one is None:
        return False
    need = {k: v * len(cfgs) for k, v in one.items()}
    have = available_bytes(device)
    if need["total"] > have:
        parts = ", ".join(f"{k} {_size(v)}" for k, v in need.items() if k != "total")
        sizes = {"task.p": cfg.task.get("p"), **{f"model.{k}": cfg.model.get(k) for k in MODEL_SIZE_KEYS}}
        sizes["train.batch_size"] = cfg.train.batch_size if cfg.train.batch_size is not None else "null"
        named = ", ".join(f"{k}={v}" for k, v in sizes.items() if v is not None)
        members = f" x {len(cfgs)} members" if len(cfgs) > 1 else ""
        raise ConfigError(
            f"{named} is not allowed here: this run{members} needs about {_size(need['total'])} ({parts}); "
            f"{device.type} has {_size(have)} available"
        )
    return True


def estimate_bytes(cfg: DictConfig, classes: dict, task=None, model=None) -> dict | None:
    """Bytes the run needs: data, parameters with gradients and optimiser state, activations of one batch. `task`:
    the run's task when already built (else it is built here); `model`: a real copy of the run's model to count on.
    None when no model is given and the run's is small enough (REAL_FORWARD_PARAMS) to be counted on a real one."""
    import torch

    from grokpipe.models import build_model
    from grokpipe.tasks import build_task

    n = classes["task"].n_samples_of(cfg.task)
    data = 2 * n * 4 * 8  # inputs and targets as int64, with the train/val copies
    if data > 2**50:  # no model is built for a task this size
        return {"data": data, "total": data}
    spec = (task if task is not None else build_task(cfg.task)).spec
    if model is None:
        with _shapes_only():
            model = build_model(cfg.model, spec)
        n_params = sum(p.numel() for p in model.parameters())
        if n_params <= REAL_FORWARD_PARAMS:  # a meta forward would import the compiler: count on the real model
            return None
        with _shapes_only():
            per_sample = _activations_per_sample(model, spec)
    else:
        n_params = sum(p.numel() for p in model.parameters())
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            per_sample = _activations_per_sample(model, spec)
    copies = 2 + len(classes["optim"].state_names) + int(bool(cfg.optim.grokfast.enabled))
    params = n_params * 4 * copies
    n_train = round(cfg.task.train_frac * n)
    batch = max(n_train, n - n_train) if cfg.train.batch_size is None else min(cfg.train.batch_size, n)
    activations = 2 * per_sample * batch * 4  # saved for backward, and their gradients
    return {"data": data, "parameters": params, "activations": activations, "total": data + params + activations}


# models up to this many parameters (64 MiB in fp32) are counted through a real copy: a forward on the meta device
# runs torch's Python references, whose first call imports the compiler (1 s of every run's start-up)
REAL_FORWARD_PARAMS = 2**24


@contextmanager
def _shapes_only():
    """The meta device (shapes, no storage), with `Tensor.normal_` a no-op there: a meta tensor has no values to
    draw, and torch's meta `normal_` is a Python reference whose first call imports the compiler (1.5 s)."""
    import torch

    normal = torch.Tensor.normal_
    torch.Tensor.normal_ = lambda self, *args, **kwargs: self if self.is_meta else normal(self, *args, **kwargs)
    try:
        with torch.device("meta"):
            yield
    finally:
        torch.Tensor.normal_ = normal


def _activations_per_sample(model, spec) -> int:
    """Elements every module outputs for one sample (one forward, on the meta device or a small real copy)."""
    import torch

    total = 0

    def hook(_module, _inputs, out):
        nonlocal total
        for t in out if isinstance(out, tuple) else (out,):
            if isinstance(t, torch.Tensor):
                total += t.numel()

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        model(torch.zeros(1, spec.seq_len, dtype=torch.long))
    finally:
        for h in handles:
            h.remove()
    return total


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"
