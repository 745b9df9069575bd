"""Figures of one run, drawn from its metrics.csv rows."""

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


def plot_phase_diagram(rows: list[dict], path: Path, title: str) -> None:
    """Ratio x weight decay -> mean grok epoch; cells where no seed grokked are marked x, failures !."""
    import numpy as np
    from matplotlib.colors import LogNorm

    ratios = sorted({r["ratio"] for r in rows})
    wds = sorted({r["wd"] for r in rows})
    grid = np.full((len(wds), len(ratios)), np.nan)
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(ratios), 1.2 + 0.7 * len(wds)))
    for r in rows:
        i, j = wds.index(r["wd"]), ratios.index(r["ratio"])
        if r["grok_mean"] is not None:
            grid[i, j] = r["grok_mean"]
            ax.text(j, i, f"{r['grok_mean']:.0f}\n{r['grokked']}/{r['n']}", ha="center", va="center", fontsize=7)
        else:
            ax.text(j, i, "!" if r["failed"] == r["n"] else "x", ha="center", va="center", color="red", fontsize=12)
    finite = grid[np.isfinite(grid)]
    norm = LogNorm(vmin=max(finite.min(), 1), vmax=max(finite.max(), 2)) if finite.size else None
    image = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis_r", norm=norm, aspect="auto", origin="lower")
    ax.set_facecolor("#dddddd")
    ax.set_xticks(range(len(ratios)), [f"{x:.3g}" for x in ratios], rotation=45)
    ax.set_yticks(range(len(wds)), [f"{w:g}" for w in wds])
    ax.set_xlabel("d_model / p")
    ax.set_ylabel("weight decay")
    ax.set_title(f"{title}: grok epoch (x = never grokked)", fontsize=9)
    if finite.size:
        fig.colorbar(image, ax=ax, label="mean grok epoch")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
