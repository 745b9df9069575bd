"""The run figures: one run's curves, drawn from its metrics.csv rows."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator, NullLocator  # noqa: E402

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


COUNTS = ("fourier_n_key",)  # columns that count something: an integer axis


def thresholds_of(measures) -> dict[str, float]:
    """Each thresholded column's value from the run's `measures` config ({column: {above|below: value}})."""
    out = {}
    for node in (measures or {}).values():
        for column, rule in (node.get("thresholds") or {}).items():
            if isinstance(rule, dict) and rule:
                out[column] = next(iter(rule.values()))
    return out


def _constant(values: list) -> float | None:
    """The one finite value of a column that never moved over the run; None if it moved (or had none)."""
    finite = {v for v in values if v is not None and math.isfinite(v)}
    return next(iter(finite)) if len(finite) == 1 else None


def plot_curves(
    rows: list[dict],
    path: Path,
    title: str,
    grok_epoch: int | None,
    memorized_epoch: int | None,
    crossed: dict[str, int | None] | None = None,
    count: str = "epoch",
    thresholds: dict[str, float] | None = None,
) -> dict:
    """Each metric measured on train and val against epoch (log x), then each other measure, in one grid without
    empty slots, memorisation and grok marked, and a thresholded measure's threshold (a horizontal line) and its
    crossing. A measure constant over the whole run is named in the caption instead of a flat panel; a count has an
    integer axis. Only the finite points are drawn (a diverged run shows the part before it diverged); losses and
    errors on a log axis. `count`: what the x axis counts (epoch, or step for a run in steps). Returns what was
    drawn: the panels in order, the grid's shape and the caption."""
    epochs = [r["epoch"] for r in rows]
    names = split_metrics(rows) or ["loss"]
    constant = {c: v for c in measure_columns(rows) if (v := _constant([r.get(c) for r in rows])) is not None}
    others = [c for c in measure_columns(rows) if c not in constant]
    specs = [(name, True) for name in names] + [(col, False) for col in others]
    per_row = min(4, len(specs))
    n_rows = -(-len(specs) // per_row)
    fig, axes = plt.subplots(n_rows, per_row, figsize=(4.5 * per_row, 3.6 * n_rows + 0.3), squeeze=False)
    flat = [a for row in axes for a in row]
    drawn = 0
    for ax, (name, split) in zip(flat, specs):
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
        if not split and (thresholds or {}).get(name) is not None:
            ax.axhline(thresholds[name], color="green", ls=":", lw=1, label=f"threshold {thresholds[name]:g}")
        if not split and (crossed or {}).get(name) is not None:
            ax.axvline(crossed[name], color="green", ls="-.", label=f"crossed @ {crossed[name]}")
        if split and name == names[0] or not split and name in (thresholds or {}):
            ax.legend(loc="best", fontsize=7)
        if here:  # a log axis needs a positive point to scale to
            ax.set_xscale("log")
            ax.set_yscale("log" if log_y else "linear")
        if name in COUNTS:
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        drawn += here
        ax.set_xlabel(count)
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.xaxis.set_minor_locator(NullLocator())  # the epoch axis's 2..9 marks were a third of the figure's time
    for ax in flat[len(specs) :]:  # the last row's tail only
        ax.set_visible(False)
    if not drawn:
        flat[0].text(0.5, 0.5, "no finite evaluation", transform=flat[0].transAxes, ha="center")
    fig.suptitle(title)
    caption = "constant over the run: " + ", ".join(f"{c} = {v:g}" for c, v in constant.items()) if constant else ""
    if caption:
        fig.text(0.5, 0.01, caption, ha="center", va="bottom", fontsize=9)
    # fixed margins in inches for these fixed-size panels: tight_layout measured every tick label for the same
    # result and took most of the figure's time (a second at the end of every run)
    width, height = fig.get_size_inches()
    fig.subplots_adjust(
        left=0.75 / width, right=1 - 0.2 / width, bottom=0.85 / height, top=1 - 0.55 / height, wspace=0.32, hspace=0.42
    )
    fig.savefig(path, dpi=110)
    plt.close(fig)
    integer = [name for name, _ in specs if name in COUNTS]
    return {"panels": [name for name, _ in specs], "grid": (n_rows, per_row), "caption": caption, "integer": integer}
