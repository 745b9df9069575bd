"""Packed training: runs of one shape train as ONE stacked model with a leading member dimension.

Runs that share model, task, p and d_model (and every other setting but the per-member keys in
`PER_MEMBER`) are stacked: the members' parameters live in one flat `[M, P]` tensor, the forward pass is
`torch.vmap` over `torch.func.functional_call`, and AdamW (with the same warm-up as
`grokpipe.optim.build_scheduler`) and the Grokfast filter are a few tensor ops over `[M, P]` with per-member
lr, weight decay and step count as `[M, 1]` tensors.

Every member yields what `grokpipe.train.run` yields for its config: its run dir with metrics.csv,
summary.json, checkpoints (the same dicts, so `run` resumes them), curves.png and W&B run. Grok detection
and early stopping run on the device; a member that has finished (grokked + patience, or diverged) is frozen
(lr 0, moments and filter held) while the others go on. Metrics stay on the device and are copied to the host
every `train.sync_every` evaluations or at a checkpoint epoch: no host sync per epoch (on a GPU that keeps the
launch-bound work queued; on a CPU it changes nothing). On CUDA the training step (forward, backward, update) is
captured once in a CUDA graph and replayed each epoch (`GraphedStep`; `train.cuda_graph=false` turns it off).

Every member's W&B run is live (runs side by side in one process), logged at each host copy.

Limits: full-batch training and AdamW only.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch.func import functional_call, stack_module_state
from torch.nn.attention import SDPBackend, sdpa_kernel

from grokpipe.errors import ConfigError
from grokpipe.grok import GrokDetector
from grokpipe.models import build_model
from grokpipe.optim import build_optimizer, build_scheduler
from grokpipe.outputs import (
    MetricsLog,
    load_at,
    load_latest,
    rng_state,
    save_checkpoint,
    save_latest,
    write_summary,
)
from grokpipe.signals import StopRequest
from grokpipe.tasks import make_dataset
from grokpipe.train import FINISHED, _read_summary, identity, pick_device, ratio, run_name, summarize
from grokpipe.validate import prepare

# keys that may differ between members; everything else (outside logger/hydra) must be equal
PER_MEMBER = ("train.seed", "optim.lr", "optim.wd", "optim.warmup_steps", "task.split_seed", "train.patience")
PER_RUN_GROUPS = ("logger", "hydra")
# device-side metric columns, in this order
DEVICE_FIELDS = ("train_loss", "train_acc", "val_loss", "val_acc", "weight_norm", "lr")
NO_PATIENCE = 2**62


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
    flat = _flatten(resolved)
    return {k: v for k, v in flat.items() if k not in PER_MEMBER}


def check_packable(cfgs: list[DictConfig]) -> None:
    """Validate every config and refuse a pack whose members differ in anything but PER_MEMBER (ConfigError)."""
    if not cfgs:
        raise ConfigError("cannot pack: no runs given")
    for cfg in cfgs:
        prepare(cfg)
    first = shape_key(cfgs[0])
    for i, cfg in enumerate(cfgs[1:], start=1):
        key = shape_key(cfg)
        for k in sorted(first.keys() | key.keys()):
            if first.get(k) != key.get(k):
                raise ConfigError(
                    f"cannot pack: {k} differs (run 0: {first.get(k)!r}, run {i}: {key.get(k)!r}); "
                    f"packed runs may differ only in {', '.join(PER_MEMBER)}"
                )
    c = cfgs[0]
    if c.optim.name != "adamw":
        raise ConfigError(f"optim.name={c.optim.name!r} is not allowed for packed training: must be adamw")


def group_by_shape(cfgs: list[DictConfig], max_members: int | None = None) -> list[list[int]]:
    """Indices of `cfgs` grouped into packable sets (equal shape_key), in first-seen order, at most max_members each.

    What a sweeper needs to train a grid's cells packed: `train_packed([cfgs[i] ...], [dirs[i] ...])` per group.
    """
    groups: dict[str, list[int]] = {}
    for i, cfg in enumerate(cfgs):
        prepare(cfg)
        groups.setdefault(json.dumps(shape_key(cfg), sort_keys=True, default=str), []).append(i)
    size = max_members or len(cfgs) or 1
    return [g[k : k + size] for g in groups.values() for k in range(0, len(g), size)]


@dataclass
class _Member:
    """Host side of one member: the single-run objects used as templates for its checkpoints, and its outputs."""

    cfg: DictConfig
    run_dir: Path
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    rng: dict
    shuffle: torch.Tensor
    metrics: MetricsLog | None = None
    detector: GrokDetector | None = None
    prior_seconds: float = 0.0
    status: str = "running"
    epoch: int = 0
    summary: dict | None = None
    resolved: dict = field(default_factory=dict)
    logger: object | None = None  # its live W&B run (grokpipe.wandb_log.WandbRun)


class PackedState:
    """The members' parameters, AdamW moments, Grokfast EMA and step counts stacked along dim 0 of `[M, P]`."""

    def __init__(self, models: list[torch.nn.Module], lrs, wds, warmups, betas, eps: float, grokfast) -> None:
        ref = models[0]
        self.names = [n for n, _ in ref.named_parameters()]
        self.shapes = [p.shape for _, p in ref.named_parameters()]
        self.sizes = [p.numel() for _, p in ref.named_parameters()]
        self.base = copy.deepcopy(ref).to("meta")
        _, self.buffers = stack_module_state(models)
        # parameters as one [M, P] tensor (not stack_module_state's dict) so AdamW is one op per update term
        rows = [torch.cat([p.detach().reshape(-1) for p in m.parameters()]) for m in models]
        self.flat = torch.stack(rows).requires_grad_(True)
        self.m = len(models)
        dev, hyper = self.flat.device, dict(dtype=torch.float64, device=self.flat.device)
        self.exp_avg = torch.zeros_like(self.flat, requires_grad=False)
        self.exp_avg_sq = torch.zeros_like(self.flat, requires_grad=False)
        self.steps = torch.zeros(self.m, 1, **hyper)
        self.lr = torch.tensor(lrs, **hyper).view(-1, 1)
        self.wd = torch.tensor(wds, **hyper).view(-1, 1)
        self.warmup = torch.tensor([max(int(w), 0) for w in warmups], **hyper).view(-1, 1)
        self.beta1, self.beta2, self.eps = float(betas[0]), float(betas[1]), float(eps)
        self.active = torch.ones(self.m, 1, dtype=torch.bool, device=dev)
        self.grokfast = grokfast  # (alpha, lamb) or None
        self.ema = torch.zeros_like(self.exp_avg) if grokfast is not None else None

    def params(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        chunks = flat.split(self.sizes, dim=1)
        return {n: c.view(self.m, *s) for n, c, s in zip(self.names, chunks, self.shapes)}

    def _call(self, params: dict, buffers: dict, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.base, (params, buffers), (x,))

    def forward(self, flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Logits [M, N, C] of every member on its own inputs x [M, N, 3]."""
        # the math attention kernel on every device: it batches under vmap (the CPU flash kernel has no
        # batching rule), and at 2-3 tokens the fused kernels save nothing
        with sdpa_kernel(SDPBackend.MATH):
            return torch.vmap(self._call, randomness="different")(self.params(flat), self.buffers, x)

    def current_lr(self) -> torch.Tensor:
        """The scheduler's lr after `steps` steps: lr * min(1, (steps + 1) / (warmup + 1)), shape [M, 1]."""
        return self.lr * torch.clamp((self.steps + 1) / (self.warmup + 1), max=1.0)

    def weight_norm(self) -> torch.Tensor:
        return self.flat.detach().float().pow(2).sum(1).sqrt()


def member_losses(state: PackedState, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-member mean cross-entropy [M] and the logits [M, N, C]."""
    logits = state.forward(state.flat, x)
    m, n = y.shape
    losses = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(m, n).mean(1)
    return losses, logits


def packed_step(state: PackedState, x: torch.Tensor, y: torch.Tensor, autocast) -> None:
    """One full-batch AdamW step of every active member; frozen members keep parameters, moments and filter."""
    state.flat.grad = None
    _step_body(state, x, y, autocast)


def _step_body(state: PackedState, x: torch.Tensor, y: torch.Tensor, autocast) -> None:
    """packed_step after the gradient reset: only device ops, no host sync, so a CUDA graph can hold it."""
    with autocast:
        losses, _ = member_losses(state, x, y)
    losses.float().sum().backward()  # members are independent: d(sum)/d(theta_m) = d(loss_m)/d(theta_m)
    grad, a = state.flat.grad, state.active
    dt = state.flat.dtype
    with torch.no_grad():
        if state.ema is not None:
            alpha, lamb = state.grokfast
            state.ema.lerp_(grad, torch.where(a, 1.0 - alpha, 0.0).to(dt))
            grad.add_(state.ema, alpha=lamb)
        lr = torch.where(a, state.current_lr(), 0.0)  # this step's lr, as the scheduler set it before the step
        state.steps.add_(a.to(state.steps.dtype))
        state.flat.mul_((1 - lr * state.wd).to(dt))
        state.exp_avg.lerp_(grad, torch.where(a, 1 - state.beta1, 0.0).to(dt))
        state.exp_avg_sq.mul_(torch.where(a, state.beta2, 1.0).to(dt))
        state.exp_avg_sq.add_(grad * grad * torch.where(a, 1 - state.beta2, 0.0).to(dt))
        step = state.steps.clamp(min=1)
        step_size = lr / (1 - state.beta1**step)
        denom = (state.exp_avg_sq.sqrt() / (1 - state.beta2**step).sqrt().to(dt)).add_(state.eps)
        state.flat.sub_(state.exp_avg / denom * step_size.to(dt))


@torch.no_grad()
def packed_eval(state: PackedState, x: torch.Tensor, y: torch.Tensor, autocast) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-member loss and accuracy [M] (float32 logits, as grokpipe.train.loss_and_acc)."""
    with autocast:
        logits = state.forward(state.flat.detach(), x).float()
    m, n = y.shape
    losses = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(m, n).mean(1)
    return losses, (logits.argmax(-1) == y).float().mean(1)


class GraphedStep:
    """packed_step, captured once in a CUDA graph and replayed every epoch after (CUDA only).

    PyTorch's whole-network capture: `warmup` ordinary steps run on a side stream (they are real epochs), the
    gradient is reset once, then forward, backward and the stacked AdamW/Grokfast update are captured and
    replayed as one launch. Every tensor the step reads or writes (parameters, moments, filter, step counts,
    lr, weight decay, the `active` mask the detector updates in place) keeps its storage, so a replay is the
    eager step. If capture fails the step stays eager, with one warning. On a CPU it is packed_step.
    """

    def __init__(self, state: PackedState, x: torch.Tensor, y: torch.Tensor, autocast, enabled: bool = True) -> None:
        self.state, self.x, self.y, self.autocast = state, x, y, autocast
        self.warmup, self.graph = 3, None
        self.eager = not (enabled and x.device.type == "cuda")

    def __call__(self) -> None:
        if self.graph is not None:
            self.graph.replay()
        elif self.eager:
            packed_step(self.state, self.x, self.y, self.autocast)
        elif self.warmup > 0:
            self.warmup -= 1
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                packed_step(self.state, self.x, self.y, self.autocast)
            torch.cuda.current_stream().wait_stream(side)
        else:
            self._capture()

    def _capture(self) -> None:
        self.state.flat.grad = None
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):  # records; nothing runs until replay
                _step_body(self.state, self.x, self.y, self.autocast)
        except Exception as exc:  # noqa: BLE001 - an eager step is always correct
            print(f"warning: CUDA graph capture failed ({type(exc).__name__}: {exc}); training eagerly", flush=True)
            self.eager = True
            packed_step(self.state, self.x, self.y, self.autocast)
            return
        self.graph = graph
        graph.replay()


class _DeviceDetector:
    """GrokDetector's rule and run()'s stopping rule as tensor ops, so stopping needs no host sync."""

    def __init__(self, tc: DictConfig, patience: list, device: torch.device, m: int) -> None:
        self.threshold, self.window, self.eval_every = tc.grok_threshold, tc.grok_window, tc.eval_every
        self.streak = torch.zeros(m, dtype=torch.long, device=device)
        self.grok_epoch = torch.full((m,), -1, dtype=torch.long, device=device)
        self.patience = torch.tensor([NO_PATIENCE if p is None else p for p in patience], device=device)

    def update(self, epoch: int, train_loss: torch.Tensor, val_acc: torch.Tensor, active: torch.Tensor) -> None:
        finite = torch.isfinite(train_loss)
        open_ = self.grok_epoch < 0
        self.streak = torch.where(open_, torch.where(val_acc >= self.threshold, self.streak + 1, 0), self.streak)
        newly = open_ & finite & (self.streak >= self.window)
        first = epoch - (self.window - 1) * self.eval_every
        self.grok_epoch = torch.where(newly, first, self.grok_epoch)
        done = (self.grok_epoch >= 0) & (epoch >= self.grok_epoch + self.patience)
        active &= (finite & ~done).view(-1, 1)

    def load(self, i: int, detector: GrokDetector) -> None:
        self.streak[i] = len(detector._streak)
        self.grok_epoch[i] = -1 if detector.grok_epoch is None else detector.grok_epoch


def _scalar_dtype() -> torch.dtype:
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def _export(state: PackedState, i: int, mem: _Member) -> None:
    """Copy member i's slice of the stacked state into its single-run model, AdamW and scheduler."""
    params = state.params(state.flat.detach())
    with torch.no_grad():
        for p, name in zip(mem.model.parameters(), state.names):
            p.copy_(params[name][i])
    steps = int(state.steps[i].item())
    avg, avg_sq = state.params(state.exp_avg), state.params(state.exp_avg_sq)
    for p, name in zip(mem.model.parameters(), state.names):
        mem.optimizer.state[p] = {
            "step": torch.tensor(float(steps), dtype=_scalar_dtype()),
            "exp_avg": avg[name][i].clone(),
            "exp_avg_sq": avg_sq[name][i].clone(),
        }
    lr = float(state.current_lr()[i].item())
    for group in mem.optimizer.param_groups:
        group["lr"] = lr
    mem.scheduler.last_epoch, mem.scheduler._step_count, mem.scheduler._last_lr = steps, steps + 1, [lr]


def _import(state: PackedState, i: int, mem: _Member, ckpt: dict) -> None:
    """Load a single-run checkpoint into member i's slice of the stacked state."""
    mem.model.load_state_dict(ckpt["model"])
    mem.optimizer.load_state_dict(ckpt["optimizer"])
    mem.scheduler.load_state_dict(ckpt["scheduler"])
    with torch.no_grad():
        state.flat[i] = torch.cat([p.detach().reshape(-1) for p in mem.model.parameters()])
        st = [mem.optimizer.state[p] for p in mem.model.parameters()]
        if st and st[0]:
            state.exp_avg[i] = torch.cat([s["exp_avg"].reshape(-1) for s in st])
            state.exp_avg_sq[i] = torch.cat([s["exp_avg_sq"].reshape(-1) for s in st])
            state.steps[i] = float(st[0]["step"])
        if state.ema is not None and ckpt.get("grokfast") is not None:
            state.ema[i] = torch.cat([e.reshape(-1) for e in ckpt["grokfast"]["ema"]])


def _checkpoint(state: PackedState, i: int, mem: _Member, path: Path, epoch: int, status: str, elapsed: float) -> None:
    _export(state, i, mem)
    grokfast = None
    if state.ema is not None:
        grokfast = {"ema": [state.params(state.ema)[n][i].clone() for n in state.names]}
    save = save_latest if path.name == "last.pt" else save_checkpoint
    save(
        path,
        {
            "model": mem.model.state_dict(),
            "optimizer": mem.optimizer.state_dict(),
            "scheduler": mem.scheduler.state_dict(),
            "grokfast": grokfast,
            "rng": mem.rng,
            "shuffle": mem.shuffle,
            "epoch": epoch,
            "elapsed": elapsed,
            "status": status,
            "config": identity(mem.cfg),
        },
    )


def _finish(state: PackedState, i: int, mem: _Member, status: str, epoch: int, elapsed: float, device):
    """What run() does after its loop: last.pt, summary.json, curves.png, the W&B run."""
    mem.status, mem.epoch = status, epoch
    _checkpoint(state, i, mem, mem.run_dir / "checkpoints" / "last.pt", epoch, status, elapsed)
    mem.metrics.close()
    mem.summary = summarize(
        mem.cfg, mem.detector, mem.metrics.rows, status, epoch, elapsed, mem.model, device, mem.run_dir
    )
    write_summary(mem.run_dir / "summary.json", mem.summary)
    cfg, det = mem.cfg, mem.detector
    if cfg.train.plot and mem.metrics.rows:
        from grokpipe.run_figures import plot_curves

        plot_curves(mem.metrics.rows, mem.run_dir / "curves.png", run_name(cfg), det.grok_epoch, det.memorized_epoch)
    if mem.logger is not None:
        mem.logger.finish(mem.summary, exit_code=int(status == "interrupted"))
        mem.logger = None


def _member_rows(mem: _Member, pending: list[tuple[int, float]], host: list, i: int, t0: float):
    """Replay run()'s per-evaluation logic on the host rows of member i; returns (status, epoch) once it stops."""
    for (epoch, stamp), values in zip(pending, host):
        row = {"epoch": epoch, **dict(zip(DEVICE_FIELDS, values[i])), "elapsed": mem.prior_seconds + stamp - t0}
        mem.metrics.append(row)
        if mem.logger is not None:
            mem.logger.log(row)
        if not math.isfinite(row["train_loss"]):
            return "diverged", epoch
        mem.detector.update(epoch, row["train_acc"], row["val_acc"])
        patience = mem.cfg.train.patience
        if mem.detector.grokked and patience is not None and epoch >= mem.detector.grok_epoch + patience:
            return "grokked", epoch
    return None


def _align(members: list[_Member], ckpts: list, device) -> int:
    """The epoch every unfinished member resumes from. A pack killed while writing its members' checkpoints
    leaves some a checkpoint ahead; those go back to their checkpoint of the earliest member's epoch
    (last.prev.pt, or fresh at epoch 0), so the pack resumes together. Raises ConfigError if one has none."""
    starts = [0 if c is None else c["epoch"] for c in ckpts]
    start = min(starts)
    for n, (mem, epoch) in enumerate(zip(members, starts)):
        if epoch == start:
            continue
        ckpt = None if start == 0 else load_at(mem.run_dir / "checkpoints", start, map_location=device)
        if ckpt is None and start != 0:
            raise ConfigError(
                f"cannot pack: {mem.run_dir} has no checkpoint of epoch {start}, where the rest of the pack "
                f"resumes (it is at {epoch}); resume the runs one by one (launch the sweep without packing)"
            )
        print(f"{mem.run_dir}: back from epoch {epoch} to {start}, where the rest of the pack resumes", flush=True)
        ckpts[n] = ckpt
    return start


def train_packed(cfgs: list[DictConfig], run_dirs: list[Path]) -> list[dict]:
    """Train runs of one shape as one stacked model; each gets run()'s outputs in its run dir. Returns summaries.

    A member whose checkpoints/last.pt says it finished is skipped (its summary.json is returned); unfinished
    members resume from last.pt when they all stopped at the same epoch. `train.sync_every` evaluations are kept
    on the device between host copies.
    """
    if len(cfgs) != len(run_dirs):
        raise ValueError(f"{len(cfgs)} configs but {len(run_dirs)} run dirs")
    check_packable(cfgs)
    tc = cfgs[0].train
    device = pick_device(tc.device)
    results: list[dict | None] = [None] * len(cfgs)
    members, data, ckpts, index = [], [], [], []
    for n, (cfg, run_dir) in enumerate(zip(cfgs, run_dirs)):
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg.train.seed)  # what run() does: equal seeds give equal initial weights
        d = make_dataset(cfg.task.op, cfg.task.p, cfg.task.train_frac, cfg.task.split_seed).to(device)
        if tc.batch_size is not None and tc.batch_size < len(d.train_y):
            raise ConfigError(f"train.batch_size={tc.batch_size!r} is not allowed for packed training: must be null")
        model = build_model(cfg.model, d.vocab_size, d.n_classes).to(device)
        optimizer = build_optimizer(cfg.optim, model)
        mem = _Member(cfg, run_dir, model, optimizer, build_scheduler(cfg.optim, optimizer), rng_state(), None)
        mem.shuffle = torch.Generator().manual_seed(cfg.train.seed).get_state()
        ckpt = load_latest(run_dir / "checkpoints", map_location=device)
        if ckpt is not None and ckpt.get("config") != identity(cfg):
            raise ConfigError(f"{run_dir} holds a run of another config; pack into new dirs or remove it")
        if ckpt is not None and ckpt["status"] in FINISHED:
            if ckpt["status"] != "completed" or ckpt["epoch"] >= cfg.train.max_epochs:
                results[n] = _read_summary(run_dir)
                continue
        members.append(mem)
        data.append(d)
        ckpts.append(ckpt)
        index.append(n)
    if not members:
        return results
    start = _align(members, ckpts, device)

    state = PackedState(
        [m.model for m in members],
        [m.cfg.optim.lr for m in members],
        [m.cfg.optim.wd for m in members],
        [m.cfg.optim.warmup_steps for m in members],
        members[0].optimizer.param_groups[0]["betas"],
        members[0].optimizer.param_groups[0]["eps"],  # what build_optimizer gave the single run
        (cfgs[0].optim.grokfast.alpha, cfgs[0].optim.grokfast.lamb) if cfgs[0].optim.grokfast.enabled else None,
    )
    detector = _DeviceDetector(tc, [m.cfg.train.patience for m in members], device, len(members))
    for i, (mem, ckpt) in enumerate(zip(members, ckpts)):
        if ckpt is not None:
            _import(state, i, mem, ckpt)
            mem.rng, mem.shuffle, mem.prior_seconds = ckpt["rng"], ckpt["shuffle"], ckpt["elapsed"]
        mem.metrics = MetricsLog(mem.run_dir / "metrics.csv", resume_epoch=start)
        mem.detector = GrokDetector(tc.grok_threshold, tc.grok_window, tc.memorize_threshold)
        for row in mem.metrics.rows:  # detector state is derived from the rows already written
            mem.detector.update(row["epoch"], row["train_acc"], row["val_acc"])
        detector.load(i, mem.detector)
        mem.resolved = OmegaConf.to_container(mem.cfg, resolve=True)
        mem.resolved["ratio"] = ratio(mem.cfg)
        if mem.cfg.logger.name == "wandb":  # every member's run is live, side by side in one process
            from grokpipe.wandb_log import WandbRun

            mem.logger = WandbRun(mem.resolved, mem.run_dir, run_name(mem.cfg), concurrent=True)
    if start:
        print(f"resuming a pack of {len(members)} from epoch {start}", flush=True)

    train_x, train_y = torch.stack([d.train_x for d in data]), torch.stack([d.train_y for d in data])
    val_x, val_y = torch.stack([d.val_x for d in data]), torch.stack([d.val_y for d in data])
    graphed = device.type == "cuda" and bool(tc.get("cuda_graph", True))
    # a CUDA graph needs autocast's cast cache off
    autocast = torch.autocast(
        device.type, dtype=torch.bfloat16, enabled=tc.precision == "bf16", cache_enabled=False if graphed else None
    )
    step = GraphedStep(state, train_x, train_y, autocast, enabled=graphed)
    ev, le, ce = tc.eval_every, tc.latest_every, tc.checkpoint_every
    sync_every = tc.sync_every
    buf = torch.zeros(sync_every, len(members), len(DEVICE_FIELDS), dtype=torch.float64, device=device)
    pending: list[tuple[int, float]] = []  # (epoch, host time) of the evaluations held in buf
    t0 = time.time()

    try:
        with StopRequest() as stop:
            epoch = start
            for epoch in range(start + 1, tc.max_epochs + 1):
                step()
                if epoch % ev == 0:
                    train_loss, train_acc = packed_eval(state, train_x, train_y, autocast)
                    val_loss, val_acc = packed_eval(state, val_x, val_y, autocast)
                    cols = (train_loss, train_acc, val_loss, val_acc, state.weight_norm(), state.current_lr()[:, 0])
                    buf[len(pending)] = torch.stack([c.double() for c in cols], dim=1)
                    pending.append((epoch, time.time()))
                    detector.update(epoch, train_loss, val_acc.double(), state.active)
                periodic = (le and epoch % le == 0) or (ce and epoch % ce == 0)
                if not (len(pending) == sync_every or epoch == tc.max_epochs or periodic or stop.requested):
                    continue
                host = buf[: len(pending)].tolist() if pending else []  # the one host copy per window
                for i, mem in enumerate(members):
                    if mem.status != "running":
                        continue
                    stopped = _member_rows(mem, pending, host, i, t0)
                    if stopped is not None:
                        _finish(state, i, mem, *stopped, mem.prior_seconds + time.time() - t0, device)
                        continue
                    for keep, path in ((ce, f"epoch_{epoch:07d}.pt"), (le, "last.pt")):
                        if keep and epoch % keep == 0:
                            elapsed = mem.prior_seconds + time.time() - t0
                            _checkpoint(state, i, mem, mem.run_dir / "checkpoints" / path, epoch, "running", elapsed)
                pending.clear()
                running = [mem.status == "running" for mem in members]
                if running != state.active[:, 0].tolist():
                    raise RuntimeError(f"packed stopping disagrees with run()'s rule at epoch {epoch}: {running}")
                if tc.print_every and epoch // tc.print_every != (epoch - 1) // tc.print_every:
                    print(f"pack of {len(members)} epoch {epoch}/{tc.max_epochs}: {sum(running)} running", flush=True)
                if not any(running) or stop.requested:
                    break

            for i, mem in enumerate(members):
                if mem.status == "running":
                    status = "interrupted" if stop.requested else ("grokked" if mem.detector.grokked else "completed")
                    _finish(state, i, mem, status, epoch, mem.prior_seconds + time.time() - t0, device)
            for n, mem in zip(index, members):
                results[n] = mem.summary
            if stop.requested:
                print(
                    f"interrupted at epoch {epoch}: checkpoints saved, resume by packing the same runs again",
                    flush=True,
                )
                stop.hand_over()
    except BaseException:  # a pack that fails leaves no W&B run open in this process
        for mem in members:
            if mem.logger is not None:
                mem.logger.finish({"status": "failed"}, exit_code=1)
                mem.logger = None
        raise
    return results
