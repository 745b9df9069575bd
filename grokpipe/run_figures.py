"""The run figures: one run's curves, drawn from its metrics.csv rows."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SPLITS = ("train", "val")


def split_metrics(rows: list[dict]) -> list[str]:
    """The metrics measured on both splits (loss, acc, ...), in column order: one panel each."""
    columns = list(rows[0]) if rows else []
    names = [c[len("train_") :] for c in columns if c.startswith("train_")]
    return [n for n in names if f"val_{n}" in columns]


def _finite(epochs: list[int], values: list, positive: bool) -> tuple[list[int], list[float]]:
    keep = [(e, v) for e, v in zip(epochs, values) if v is not None and math.isfinite(v) and (v > 0 or not positive)]
    return [e for e, _ in keep], [v for _, v in keep]


def plot_curves(rows: list[dict], path: Path, title: str, grok_epoch: int | None, memorized_epoch: int | None) -> None:
    """Each metric measured on train and val against epoch (log x), with memorisation and grok marked. Only the
    finite points are drawn (a diverged run shows the part before it diverged); losses on a log axis."""
    epochs = [r["epoch"] for r in rows]
    names = split_metrics(rows) or ["loss"]
    fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 4), squeeze=False)
    drawn = 0
    for ax, name in zip(axes[0], names):
        log_y, here = name == "loss", 0
        for split in SPLITS:
            xs, ys = _finite(epochs, [r.get(f"{split}_{name}") for r in rows], positive=log_y)
            here += len(xs)
            ax.plot(xs, ys, label=split)
        if memorized_epoch is not None:
            ax.axvline(memorized_epoch, color="grey", ls=":", label=f"memorised @ {memorized_epoch}")
        if grok_epoch is not None:
            ax.axvline(grok_epoch, color="red", ls="--", label=f"grokked @ {grok_epoch}")
        if here:  # a log axis needs a positive point to scale to
            ax.set_xscale("log")
            ax.set_yscale("log" if log_y else "linear")
        drawn += here
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[0][0].legend(loc="best", fontsize=8)
    if not drawn:
        axes[0][0].text(0.5, 0.5, "no finite evaluation", transform=axes[0][0].transAxes, ha="center")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
