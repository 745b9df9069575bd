"""One grokking run: build everything from the config, train full batch, evaluate, detect grokking, write outputs."""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from grokpipe.errors import ConfigError
from grokpipe.grok import GrokDetector
from grokpipe.models import build_model
from grokpipe.optim import Grokfast, build_optimizer, build_scheduler
from grokpipe.outputs import (
    MetricsLog,
    StorageError,
    check_storage,
    load_latest,
    rng_state,
    save_checkpoint,
    save_latest,
    set_rng_state,
    write_summary,
)
from grokpipe.progress_bar import ProgressBar
from grokpipe.signals import StopRequest
from grokpipe.tasks import make_dataset
from grokpipe.validate import prepare, task_size

FINISHED = ("grokked", "completed", "diverged")


def pick_device(name: str) -> torch.device:
    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available(),
        "mps": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()),
    }
    if name != "auto":
        if not available[name]:
            raise ConfigError(f"train.device={name!r} is not available on this machine; use auto or cpu")
        return torch.device(name)
    if available["cuda"]:
        return torch.device("cuda")
    if available["mps"]:
        return torch.device("mps")
    return torch.device("cpu")


def choose_engine(cfg: DictConfig) -> str:
    """`loop` (run()) or `packed` (grokpipe.packed.train_packed as a pack of one: the graphed, no-sync GPU path).
    auto = packed on CUDA when the run is full-batch AdamW, else loop."""
    tc = cfg.train
    if tc.engine != "auto":
        return tc.engine
    cuda = pick_device(tc.device).type == "cuda"
    return "packed" if cuda and tc.batch_size is None and cfg.optim.name == "adamw" else "loop"


def ratio(cfg: DictConfig) -> float:
    """Model width relative to the task size: d_model / p (or / group order for S5)."""
    return cfg.model.d_model / task_size(cfg)


def identity(cfg: DictConfig) -> dict:
    """What makes two configs the same run: a checkpoint of another identity is never resumed."""
    keep = {k: cfg.train[k] for k in ("seed", "batch_size", "precision", "eval_every")}
    return OmegaConf.to_container(
        OmegaConf.create({"model": cfg.model, "task": cfg.task, "optim": cfg.optim, "train": keep}), resolve=True
    )


def run_name(cfg: DictConfig) -> str:
    return f"{cfg.model.name}-d{cfg.model.d_model}-{cfg.task.op}{cfg.task.p}-wd{cfg.optim.wd:g}-s{cfg.train.seed}"


def train_step(model, optimizer, scheduler, grokfast, x, y, autocast) -> None:
    with autocast:
        loss = F.cross_entropy(model(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grokfast is not None:
        grokfast()
    optimizer.step()
    scheduler.step()


@torch.no_grad()
def loss_and_acc(model, x, y, autocast) -> tuple[float, float]:
    with autocast:
        logits = model(x).float()
    return F.cross_entropy(logits, y).item(), (logits.argmax(-1) == y).float().mean().item()


@torch.no_grad()
def weight_norm(model) -> float:
    return torch.sqrt(sum((p.detach().float() ** 2).sum() for p in model.parameters())).item()


def run(cfg: DictConfig, run_dir: Path) -> dict:
    """Train one config in `run_dir`, resuming from checkpoints/last.pt if one is there. Returns summary.json."""
    prepare(cfg)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    tc = cfg.train
    device = pick_device(tc.device)
    torch.manual_seed(tc.seed)

    data = make_dataset(cfg.task.op, cfg.task.p, cfg.task.train_frac, cfg.task.split_seed).to(device)
    model = build_model(cfg.model, data.vocab_size, data.n_classes).to(device)
    optimizer = build_optimizer(cfg.optim, model)
    scheduler = build_scheduler(cfg.optim, optimizer)
    grokfast = (
        Grokfast(model, cfg.optim.grokfast.alpha, cfg.optim.grokfast.lamb) if cfg.optim.grokfast.enabled else None
    )
    shuffle = torch.Generator().manual_seed(tc.seed)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=tc.precision == "bf16")

    ckpt_dir, last = run_dir / "checkpoints", run_dir / "checkpoints" / "last.pt"
    start_epoch, prior_seconds = 0, 0.0
    state = load_latest(ckpt_dir, map_location=device)
    if state is not None:
        if state.get("config") != identity(cfg):
            differ = sorted(k for k in identity(cfg) if (state.get("config") or {}).get(k) != identity(cfg)[k])
            raise ConfigError(
                f"{run_dir} holds a run of another config (differs in: {', '.join(differ)}); "
                "launch into a new dir or remove it"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if grokfast is not None:
            grokfast.load_state_dict(state["grokfast"])
        set_rng_state(state["rng"])
        shuffle.set_state(state["shuffle"])
        start_epoch, prior_seconds = state["epoch"], state["elapsed"]
        if state["status"] in FINISHED and (state["status"] != "completed" or start_epoch >= tc.max_epochs):
            return _read_summary(run_dir)
        print(f"resuming {run_dir} from epoch {start_epoch}", flush=True)

    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    n_checkpoints = 2 + (tc.max_epochs // tc.checkpoint_every if tc.checkpoint_every else 0)
    check_storage(run_dir, need_bytes=4 * param_bytes * n_checkpoints + 100 * tc.max_epochs // tc.eval_every + 2**20)
    metrics = MetricsLog(run_dir / "metrics.csv", resume_epoch=start_epoch)
    detector = GrokDetector(tc.grok_threshold, tc.grok_window, tc.memorize_threshold)
    for row in metrics.rows:  # detector state is derived from the rows already written
        detector.update(row["epoch"], row["train_acc"], row["val_acc"])

    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved["ratio"] = ratio(cfg)
    logger = None
    if cfg.logger.name == "wandb":
        from grokpipe.wandb_log import WandbRun

        logger = WandbRun(resolved, run_dir, run_name(cfg))

    def state(epoch: int, status: str) -> dict:
        return {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "grokfast": grokfast.state_dict() if grokfast is not None else None,
            "rng": rng_state(),
            "shuffle": shuffle.get_state(),
            "epoch": epoch,
            "elapsed": elapsed(),
            "status": status,
            "config": identity(cfg),
        }

    t0 = time.time()
    elapsed = lambda: prior_seconds + time.time() - t0  # noqa: E731
    progress = ProgressBar(tc.max_epochs, start_epoch, tc.print_every, run_name(cfg))
    full_batch = tc.batch_size is None or tc.batch_size >= len(data.train_y)
    with StopRequest() as stop:
        status, epoch, saved_epoch = "running", start_epoch, start_epoch
        try:
            for epoch in range(start_epoch + 1, tc.max_epochs + 1):
                model.train()
                if full_batch:
                    train_step(model, optimizer, scheduler, grokfast, data.train_x, data.train_y, autocast)
                else:
                    order = torch.randperm(len(data.train_y), generator=shuffle).to(device)
                    for idx in order.split(tc.batch_size):
                        train_step(
                            model, optimizer, scheduler, grokfast, data.train_x[idx], data.train_y[idx], autocast
                        )

                if epoch % tc.eval_every == 0:
                    model.eval()
                    train_loss, train_acc = loss_and_acc(model, data.train_x, data.train_y, autocast)
                    val_loss, val_acc = loss_and_acc(model, data.val_x, data.val_y, autocast)
                    row = {
                        "epoch": epoch,
                        "train_loss": train_loss,
                        "train_acc": train_acc,
                        "val_loss": val_loss,
                        "val_acc": val_acc,
                        "weight_norm": weight_norm(model),
                        "lr": scheduler.get_last_lr()[0],
                        "elapsed": elapsed(),
                    }
                    metrics.append(row)
                    if logger is not None:
                        logger.log(row)
                    progress.update(row)
                    if not math.isfinite(train_loss):
                        status = "diverged"
                        break
                    detector.update(epoch, train_acc, val_acc)
                    if detector.grokked and tc.patience is not None and epoch >= detector.grok_epoch + tc.patience:
                        break
                if tc.checkpoint_every and epoch % tc.checkpoint_every == 0:
                    save_checkpoint(ckpt_dir / f"epoch_{epoch:07d}.pt", state(epoch, status))
                if tc.latest_every and epoch % tc.latest_every == 0:
                    save_latest(last, state(epoch, status))
                    saved_epoch = epoch
                if stop.requested:
                    status = "interrupted"
                    break
        except StorageError as exc:
            raise stopped(exc, epoch, saved_epoch) from exc
        finally:
            progress.close()
            metrics.close()

        if status == "running":
            status = "grokked" if detector.grokked else "completed"
        summary = summarize(cfg, detector, metrics.rows, status, epoch, elapsed(), model, device, run_dir)
        try:  # summary first: a finished checkpoint without its summary would never be trained again
            write_summary(run_dir / "summary.json", summary)
            save_latest(last, state(epoch, status))
        except StorageError as exc:
            raise stopped(exc, epoch, saved_epoch) from exc
        if tc.plot and metrics.rows:
            from grokpipe.run_figures import plot_curves

            plot_curves(
                metrics.rows, run_dir / "curves.png", run_name(cfg), detector.grok_epoch, detector.memorized_epoch
            )
        if logger is not None:
            logger.finish(summary, exit_code=int(status == "interrupted"))
        if status == "interrupted":
            print(f"interrupted at epoch {epoch}: checkpoint saved, resume by launching on {run_dir}", flush=True)
            stop.hand_over()
        return summary


def summarize(
    cfg: DictConfig,
    detector: GrokDetector,
    rows: list[dict],
    status: str,
    epoch: int,
    wall_seconds: float,
    model,
    device: torch.device,
    run_dir: Path,
) -> dict:
    """summary.json: the outcome, the final metrics and the key hyperparameters (the contract analysis reads)."""
    final = rows[-1] if rows else {}
    tc = cfg.train
    return {
        "status": status,
        "grokked": detector.grokked,
        "grok_epoch": detector.grok_epoch,
        "memorized_epoch": detector.memorized_epoch,
        "final_train_acc": final.get("train_acc"),
        "final_val_acc": final.get("val_acc"),
        "final_train_loss": final.get("train_loss"),
        "final_val_loss": final.get("val_loss"),
        "epochs_run": epoch,
        "wall_seconds": round(wall_seconds, 3),
        "ratio": ratio(cfg),
        "model": cfg.model.name,
        "d_model": cfg.model.d_model,
        "op": cfg.task.op,
        "p": cfg.task.p,
        "train_frac": cfg.task.train_frac,
        "split_seed": cfg.task.split_seed,
        "optimizer": cfg.optim.name,
        "lr": cfg.optim.lr,
        "wd": cfg.optim.wd,
        "grokfast": bool(cfg.optim.grokfast.enabled),
        "seed": tc.seed,
        "precision": tc.precision,
        "max_epochs": tc.max_epochs,
        "n_params": sum(p.numel() for p in model.parameters()),
        "device": str(device),
        "run_dir": str(run_dir),
    }


def stopped(exc: StorageError, epoch: int, saved_epoch: int) -> StorageError:
    """The storage error, saying where the run stopped and which checkpoint is intact."""
    return StorageError(
        exc.errno,
        f"{exc.strerror}; run stopped at epoch {epoch}, last good checkpoint: "
        f"checkpoints/last.pt (epoch {saved_epoch})",
    )


def _read_summary(run_dir: Path) -> dict:
    import json

    path = run_dir / "summary.json"
    return json.loads(path.read_text()) if path.exists() else {"status": "unknown", "run_dir": str(run_dir)}
