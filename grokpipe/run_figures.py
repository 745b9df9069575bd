"""The run figures: one run's curves, drawn from its metrics.csv rows."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import NullLocator  # noqa: E402

SPLITS = ("train", "val")


def split_metrics(rows: list[dict]) -> list[str]:
    """The metrics measured on both splits (loss, acc, ...), in column order: one panel each."""
    columns = list(rows[0]) if rows else []
    names = [c[len("train_") :] for c in columns if c.startswith("train_")]
    return [n for n in names if f"val_{n}" in columns]


def _finite(epochs: list[int], values: list, positive: bool) -> tuple[list[int], list[float]]:
    keep = [(e, v) for e, v in zip(epochs, values) if v is not None and math.isfinite(v) and (v > 0 or not positive)]
    return [e for e, _ in keep], [v for _, v in keep]


LOG_Y = ("loss", "mae")  # the metrics drawn on a log axis: they fall by orders of magnitude towards 0
# columns that are bookkeeping or labels, not curves: no panel of their own
NOT_DRAWN = ("epoch", "elapsed", "lr")
NOT_DRAWN_PREFIX = ("fourier_key", "fourier_norm_")


def measure_columns(rows: list[dict]) -> list[str]:
    """The columns measured once per evaluation (weight norm, the progress measures): one small panel each."""
    columns = list(rows[0]) if rows else []
    paired = {f"{s}_{n}" for n in split_metrics(rows) for s in SPLITS}
    return [c for c in columns if c not in paired and c not in NOT_DRAWN and not c.startswith(NOT_DRAWN_PREFIX)]


def plot_curves(
    rows: list[dict],
    path: Path,
    title: str,
    grok_epoch: int | None,
    memorized_epoch: int | None,
    crossed: dict[str, int | None] | None = None,
    count: str = "epoch",
) -> None:
    """Each metric measured on train and val against epoch (log x) in the first row, each other measure in the
    rows below, with memorisation, grok and each measure's threshold crossing marked. Only the finite points are
    drawn (a diverged run shows the part before it diverged); losses and errors on a log axis. `count`: what the
    x axis counts (epoch, or step for a run in steps)."""
    epochs = [r["epoch"] for r in rows]
    names = split_metrics(rows) or ["loss"]
    others = measure_columns(rows)
    per_row = max(len(names), 4)
    n_rows = 1 + -(-len(others) // per_row)
    fig, axes = plt.subplots(n_rows, per_row, figsize=(4.5 * per_row, 3.6 * n_rows), squeeze=False)
    panels = [(ax, name, True) for ax, name in zip(axes[0], names)]
    panels += [(ax, col, False) for ax, col in zip([a for row in axes[1:] for a in row], others)]
    drawn = 0
    for ax, name, split in panels:
        log_y, here = name.endswith(LOG_Y), 0
        series = [(s, f"{s}_{name}") for s in SPLITS] if split else [(name, name)]
        for label, col in series:
            xs, ys = _finite(epochs, [r.get(col) for r in rows], positive=log_y)
            here += len(xs)
            ax.plot(xs, ys, label=label)
        if memorized_epoch is not None:
            ax.axvline(memorized_epoch, color="grey", ls=":", label=f"memorised @ {memorized_epoch}")
        if grok_epoch is not None:
            ax.axvline(grok_epoch, color="red", ls="--", label=f"grokked @ {grok_epoch}")
        if not split and (crossed or {}).get(name) is not None:
            ax.axvline(crossed[name], color="green", ls="-.", label=f"crossed @ {crossed[name]}")
            ax.legend(loc="best", fontsize=7)
        if here:  # a log axis needs a positive point to scale to
            ax.set_xscale("log")
            ax.set_yscale("log" if log_y else "linear")
        drawn += here
        ax.set_xlabel(count)
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.xaxis.set_minor_locator(NullLocator())  # the epoch axis's 2..9 marks were a third of the figure's time
    used = {id(ax) for ax, _, _ in panels}
    for ax in (a for row in axes for a in row):
        if id(ax) not in used:
            ax.set_visible(False)
    axes[0][0].legend(loc="best", fontsize=8)
    if not drawn:
        axes[0][0].text(0.5, 0.5, "no finite evaluation", transform=axes[0][0].transAxes, ha="center")
    fig.suptitle(title)
    # fixed margins in inches for these fixed-size panels: tight_layout measured every tick label for the same
    # result and took most of the figure's time (a second at the end of every run)
    width, height = fig.get_size_inches()
    fig.subplots_adjust(
        left=0.75 / width, right=1 - 0.2 / width, bottom=0.6 / height, top=1 - 0.55 / height, wspace=0.32, hspace=0.42
    )
    fig.savefig(path, dpi=110)
    plt.close(fig)
