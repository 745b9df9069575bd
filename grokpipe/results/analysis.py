"""What a run learned, read from its checkpoints: per-class cosine similarity and the embeddings' Fourier spectrum.

Both follow a run's checkpoints (epoch_*.pt, then last.pt) and read only the output contract: `.hydra/config.yaml`,
`metrics.csv` and the checkpoints' "model" state dicts.

- Cosine probe (seed 003's probe.py): for each class c, the representations `model.features(x)` of every pair with
  label c. `within` is the mean pairwise cosine similarity inside a class (averaged over classes), `between` the mean
  cosine similarity between two different classes' mean vectors.
- Fourier spectrum (Nanda et al. 2023): the number-token embeddings W = tok.weight[:p] (p x d) projected onto the
  orthonormal real Fourier basis of Z_p (the constant, then cos and sin of 2 pi k t / p for k = 1..p//2). The power
  of frequency k is the squared norm of its cos and sin coefficients; the powers of all frequencies plus the
  constant add up to ||W||_F^2, so a frequency's share of the embedding norm is its power over ||W||_F^2.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

import grokpipe.core.checkpoint as checkpoint
from grokpipe.config.validate import apply_ratio
from grokpipe.core.outputs import read_metrics
from grokpipe.models import build_model
from grokpipe.tasks import TaskSpec, build_task

ANALYSIS_FIELDS = (
    "epoch",
    "within_cos",
    "between_cos",
    "key_freqs",
    "n_key",
    "key_share",
    "topk_freqs",
    "topk_share",
    "train_acc",
    "val_acc",
)


class AnalysisError(ValueError):
    """A run the analysis cannot read; str() is the one line shown to the user."""


# ---------------------------------------------------------------- the run's files


def load_run_config(run_dir: Path) -> DictConfig:
    """The composed config Hydra saved, with d_model derived from model.ratio as at training time."""
    path = Path(run_dir) / ".hydra" / "config.yaml"
    if not path.exists():
        raise AnalysisError(f"{run_dir} has no .hydra/config.yaml: not a grokpipe run dir")
    cfg = OmegaConf.load(path)
    apply_ratio(cfg)
    return cfg


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(epoch, path) of every kept checkpoint, in epoch order, then last.pt (grokpipe.core.checkpoint); AnalysisError
    when the run has none."""
    found = checkpoint.list_checkpoints(run_dir)
    if not found:
        raise AnalysisError(f"{run_dir} has no checkpoints (checkpoints/epoch_*.pt or checkpoints/last.pt)")
    return found


def load_model(cfg: DictConfig, spec: TaskSpec, path: Path) -> nn.Module:
    """The model of one checkpoint, in eval mode on the CPU."""
    model = build_model(cfg.model, spec)
    model.load_state_dict(checkpoint.read(path).model)
    return model.eval()


def metrics_at(rows: list[dict], epoch: int) -> dict | None:
    """The evaluation row at `epoch`, else the latest one before it (checkpoints and evaluations may not align)."""
    before = [r for r in rows if r["epoch"] <= epoch]
    return before[-1] if before else None


# ---------------------------------------------------------------- cosine probe


@dataclass
class CosineProbe:
    within: float  # mean pairwise cosine inside a class, averaged over classes with at least two members
    between: float  # mean cosine between the mean vectors of two different classes
    matrix: torch.Tensor  # (classes, classes) cosine similarity of the class-mean vectors


def class_cosine(features: torch.Tensor, labels: torch.Tensor, n_classes: int) -> CosineProbe:
    """Within-class cosine similarity of representations against between-class similarity of the class means."""
    feats = features.detach().double()
    unit = nn.functional.normalize(feats, dim=1)
    counts = torch.bincount(labels, minlength=n_classes).double()
    unit_sums = torch.zeros(n_classes, feats.shape[1], dtype=feats.dtype).index_add_(0, labels, unit)
    # sum over ordered pairs i != j of u_i . u_j = ||sum u||^2 - n, for unit vectors
    pair_sums = (unit_sums**2).sum(1) - counts
    has_pairs = counts >= 2
    within = (pair_sums[has_pairs] / (counts[has_pairs] * (counts[has_pairs] - 1))).mean().item()

    sums = torch.zeros(n_classes, feats.shape[1], dtype=feats.dtype).index_add_(0, labels, feats)
    present = counts > 0
    means = nn.functional.normalize(sums[present] / counts[present, None], dim=1)
    sub = means @ means.T
    k = len(means)
    between = ((sub.sum() - sub.diagonal().sum()) / (k * (k - 1))).item() if k > 1 else math.nan
    matrix = torch.full((n_classes, n_classes), math.nan, dtype=torch.float64)
    idx = present.nonzero().squeeze(1)
    matrix[idx[:, None], idx[None, :]] = sub
    return CosineProbe(within, between, matrix.float())


@torch.no_grad()
def probe_model(model: nn.Module, x: torch.Tensor, y: torch.Tensor, n_classes: int) -> CosineProbe:
    return class_cosine(model.features(x), y, n_classes)


# ---------------------------------------------------------------- Fourier spectrum


def fourier_basis(p: int) -> torch.Tensor:
    """Orthonormal real Fourier basis of Z_p as rows: constant, then cos k and sin k for k = 1..p//2 (p odd)."""
    t = torch.arange(p, dtype=torch.float64)
    rows = [torch.ones(p, dtype=torch.float64)]
    for k in range(1, p // 2 + 1):
        rows += [torch.cos(2 * math.pi * k * t / p), torch.sin(2 * math.pi * k * t / p)]
    basis = torch.stack(rows)
    return basis / basis.norm(dim=1, keepdim=True)


def fourier_power(embedding: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Power of each frequency k = 1..p//2 (index k-1) and the total ||W||_F^2, for W of shape (p, d), p odd."""
    w = embedding.detach().double()
    p = w.shape[0]
    if p % 2 == 0:
        raise AnalysisError(f"the Fourier analysis needs an odd number of tokens (a prime p), got {p}")
    coeffs = fourier_basis(p) @ w  # (p, d): row 0 the constant, rows 2k-1 and 2k frequency k
    power = (coeffs[1:] ** 2).sum(1).view(-1, 2).sum(1)
    return power, float((w**2).sum())


def key_frequencies(power: torch.Tensor, total: float, share: float) -> tuple[list[int], float]:
    """The smallest set of frequencies (strongest first) holding at least `share` of the norm, and the share it holds.

    When every frequency together holds less (a large constant component), all of them are returned.
    """
    order = torch.argsort(power, descending=True)
    held = torch.cumsum(power[order], 0) / total
    n = min(int((held < share).sum()) + 1, len(order))
    return sorted(int(k) + 1 for k in order[:n]), float(held[n - 1])


def top_frequencies(power: torch.Tensor, total: float, k: int) -> tuple[list[int], float]:
    """The k strongest frequencies and the share of the embedding norm they hold."""
    order = torch.argsort(power, descending=True)[:k]
    return sorted(int(f) + 1 for f in order), float(power[order].sum() / total)


def check_fourier_task(cfg: DictConfig) -> None:
    if cfg.task.get("p") is None:
        raise AnalysisError(
            f"the Fourier analysis needs a modular task (tokens 0..p-1 of Z_p); task {cfg.task.name!r} has no such "
            "basis (run with --no-fourier for the cosine probe alone)"
        )


# ---------------------------------------------------------------- over a run


@dataclass
class RunAnalysis:
    rows: list[dict]  # one per checkpoint, ANALYSIS_FIELDS
    spectra: list[list[float]]  # per checkpoint, the share of the embedding norm of each frequency k = 1..p//2
    matrix: torch.Tensor  # class x class cosine matrix at matrix_epoch
    matrix_epoch: int
    title: str  # the run's model, task and optimiser, for the figures


def run_title(cfg: DictConfig) -> str:
    m, t = cfg.model, cfg.task
    task = t.name if t.get("p") is None else f"{t.op} p={t.p}"
    return f"{m.name} d_model={m.d_model}, {task}, wd={cfg.optim.wd:g}, seed={cfg.train.seed}"


def analyze_run(
    run_dir: Path,
    share: float = 0.7,
    top_k: int = 5,
    fourier: bool = True,
    matrix_epoch: int | None = None,
) -> RunAnalysis:
    """Cosine probe and Fourier spectrum at every checkpoint of a run; the cosine matrix at matrix_epoch (else last)."""
    cfg = load_run_config(run_dir)
    task = build_task(cfg.task)
    if task.spec.output != "classes":
        raise AnalysisError(
            f"the cosine probe and the Fourier spectrum need class labels; task {task.name!r} has {task.spec.output} "
            "targets (scripts/llc.py reads any run)"
        )
    if fourier:
        check_fourier_task(cfg)
    x, y = task.samples()  # every pair, train and val: the probe covers the task
    n = task.spec.n_outputs
    metric_rows = read_metrics(Path(run_dir) / "metrics.csv") if (Path(run_dir) / "metrics.csv").exists() else []
    checkpoints = list_checkpoints(run_dir)
    epochs = [e for e, _ in checkpoints]
    if matrix_epoch is None:
        matrix_epoch = epochs[-1]
    elif matrix_epoch not in epochs:
        raise AnalysisError(f"--matrix-epoch={matrix_epoch} has no checkpoint; epochs with one: {epochs}")

    rows, spectra, matrix = [], [], None
    for epoch, path in checkpoints:
        model = load_model(cfg, task.spec, path)
        probe = probe_model(model, x, y, n)
        row = {"epoch": epoch, "within_cos": probe.within, "between_cos": probe.between}
        if fourier:
            power, total = fourier_power(model.tok.weight[: cfg.task.p])
            keys, key_share = key_frequencies(power, total, share)
            tops, top_share = top_frequencies(power, total, top_k)
            row |= {"key_freqs": keys, "n_key": len(keys), "key_share": key_share}
            row |= {"topk_freqs": tops, "topk_share": top_share}
            spectra.append((power / total).tolist())
        m = metrics_at(metric_rows, epoch)
        row |= {"train_acc": m["train_acc"] if m else None, "val_acc": m["val_acc"] if m else None}
        rows.append(row)
        if epoch == matrix_epoch:
            matrix = probe.matrix
    return RunAnalysis(rows, spectra, matrix, matrix_epoch, run_title(cfg))


def write_analysis_csv(rows: list[dict], path: Path) -> None:
    """analysis.csv: ANALYSIS_FIELDS, frequency lists space-separated, missing values blank."""

    def cell(v) -> str:
        if v is None:
            return ""
        if isinstance(v, list):
            return " ".join(str(k) for k in v)
        return str(v) if isinstance(v, int) else f"{v:.6g}"

    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(ANALYSIS_FIELDS)
        for r in rows:
            w.writerow([cell(r.get(k)) for k in ANALYSIS_FIELDS])


def read_analysis_csv(path: Path) -> list[dict]:
    """analysis.csv back as dicts: epoch and n_key int, frequency lists as lists of int, the rest float or None."""
    out = []
    with open(path, newline="") as fh:
        for r in csv.DictReader(fh):
            row = {}
            for k, v in r.items():
                if v == "":
                    row[k] = None
                elif k in ("key_freqs", "topk_freqs"):
                    row[k] = [int(f) for f in v.split()]
                elif k in ("epoch", "n_key"):
                    row[k] = int(v)
                else:
                    row[k] = float(v)
            out.append(row)
    return out


# ---------------------------------------------------------------- figures


def plot_analysis(result: RunAnalysis, out_dir: Path) -> list[Path]:
    """spectrum.png and fourier_share.png (with the Fourier analysis), cosine.png, cosine_matrix.png; their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = result.rows
    epochs = [r["epoch"] for r in rows]
    val = [np.nan if r["val_acc"] is None else r["val_acc"] for r in rows]
    paths = []

    def save(fig, name: str) -> None:
        fig.suptitle(result.title, fontsize=9)
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=110)
        plt.close(fig)
        paths.append(out_dir / name)

    if result.spectra:
        spec = np.array(result.spectra).T  # (frequencies, checkpoints)
        fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(epochs) + 3), max(4, 0.12 * spec.shape[0] + 1.5)))
        image = ax.imshow(spec, aspect="auto", origin="lower", cmap="magma", interpolation="nearest")
        ax.set_xticks(range(len(epochs)), [str(e) for e in epochs], rotation=90, fontsize=7)
        step = max(1, spec.shape[0] // 15)
        ax.set_yticks(range(0, spec.shape[0], step), [str(k + 1) for k in range(0, spec.shape[0], step)])
        ax.set_xlabel("epoch (checkpoint)")
        ax.set_ylabel("frequency k")
        fig.colorbar(image, ax=ax, label="share of embedding norm")
        ax.set_title("Fourier spectrum of the token embeddings", fontsize=9)
        save(fig, "spectrum.png")

        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot(epochs, [r["topk_share"] for r in rows], "o-", label="top-k frequencies' share")
        ax.plot(epochs, [r["key_share"] for r in rows], "s--", alpha=0.6, label="key frequencies' share")
        ax.plot(epochs, val, "k:", label="val acc")
        ax2 = ax.twinx()
        ax2.plot(epochs, [r["n_key"] for r in rows], "^-", color="tab:green", alpha=0.6, label="number of key freqs")
        ax2.set_ylabel("number of key frequencies", color="tab:green")
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("epoch")
        ax.set_ylabel("share / accuracy")
        ax.grid(alpha=0.3)
        lines = ax.get_legend_handles_labels()
        lines2 = ax2.get_legend_handles_labels()
        ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=7, loc="center left")
        ax.set_title("key-frequency share of the embedding norm and val acc", fontsize=9)
        save(fig, "fourier_share.png")

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(epochs, [r["within_cos"] for r in rows], "o-", label="within class")
    ax.plot(epochs, [r["between_cos"] for r in rows], "s-", label="between class means")
    ax.plot(epochs, val, "k:", label="val acc")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cosine similarity / accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("cosine similarity of representations (model.features)", fontsize=9)
    save(fig, "cosine.png")

    fig, ax = plt.subplots(figsize=(6, 5))
    # ReLU features make every cosine positive: scale to the matrix's own range so its structure shows
    image = ax.imshow(result.matrix.numpy(), cmap="viridis", interpolation="nearest")
    ax.set_xlabel("class")
    ax.set_ylabel("class")
    fig.colorbar(image, ax=ax, label="cosine of class means")
    ax.set_title(f"class x class cosine at epoch {result.matrix_epoch}", fontsize=9)
    save(fig, "cosine_matrix.png")
    return paths
