"""The run figures: one run's curves, drawn from its metrics.csv rows."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_curves(rows: list[dict], path: Path, title: str, grok_epoch: int | None, memorized_epoch: int | None) -> None:
    """Accuracy and loss against epoch (log x), with memorisation and grok marked."""
    epochs = [r["epoch"] for r in rows]
    fig, (acc, loss) = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, label in ((acc, "acc", "accuracy"), (loss, "loss", "loss")):
        ax.plot(epochs, [r[f"train_{key}"] for r in rows], label="train")
        ax.plot(epochs, [r[f"val_{key}"] for r in rows], label="val")
        if memorized_epoch is not None:
            ax.axvline(memorized_epoch, color="grey", ls=":", label=f"memorised @ {memorized_epoch}")
        if grok_epoch is not None:
            ax.axvline(grok_epoch, color="red", ls="--", label=f"grokked @ {grok_epoch}")
        ax.set_xscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    loss.set_yscale("log")
    acc.legend(loc="best", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
