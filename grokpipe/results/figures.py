"""The sweep figures: the phase diagram of a sweep's table, and from the results database (grokpipe.results.database)
the phase diagram, grok epoch against ratio, training curves, memorisation-to-grok gap, weight norm, the progress
measures of every run with its grok marked, and each measure's threshold crossing against the grok epoch."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import grokpipe.core.split as split  # noqa: E402

FORMATS = ("png", "svg", "pdf")
DPI = 110


RATIO_AXES = ("model.ratio", "model.d_model", "task.p", "ratio")  # what moves d_model / p
WD_AXES = ("optim.wd", "wd")


def _text(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _key(value) -> tuple:
    return (0, value, "") if isinstance(value, (int, float)) and not isinstance(value, bool) else (1, 0, str(value))


def _panels(rows: list[dict], rest: list[str]) -> dict[str, list[dict]]:
    """The rows split by the values of `rest` and their split protocol: one panel each, named by them."""
    panels: dict[str, list[dict]] = {}
    for r in rows:
        name = ", ".join([*(f"{k}={_text(r.get(k))}" for k in rest), f"split {r.get('split') or '-'}"])
        panels.setdefault(name, []).append(r)
    return panels


def plot_grid(rows: list[dict], x: str, y: str, rest: list[str], path: Path, title: str,
              labels: tuple[str, str] | None = None) -> None:  # fmt: skip
    """`x` against `y` -> mean grok epoch, with grokked/n in each cell (x = no seed grokked, ! = every cell failed);
    one panel per value of the `rest` of the axes and per split protocol, so nothing unlike is drawn as one cell."""
    from matplotlib.colors import LogNorm

    xs = sorted({r.get(x) for r in rows}, key=_key)
    ys = sorted({r.get(y) for r in rows}, key=_key)
    panels = _panels(rows, rest)
    means = [r["grok_mean"] for r in rows if r["grok_mean"] is not None]
    norm = LogNorm(vmin=max(min(means), 1), vmax=max(max(means), 2)) if means else None
    cols = min(len(panels), 3)
    width, height = 1.6 + 0.9 * len(xs), 1.4 + 0.7 * len(ys)
    fig, axes = plt.subplots(-(-len(panels) // cols), cols, figsize=(width * cols, height * -(-len(panels) // cols)),
                             squeeze=False)  # fmt: skip
    for ax, (name, mine) in zip(axes.flat, panels.items()):
        grid = np.full((len(ys), len(xs)), np.nan)
        for r in mine:
            i, j = ys.index(r.get(y)), xs.index(r.get(x))
            if r["grok_mean"] is not None:
                grid[i, j] = r["grok_mean"]
                ax.text(j, i, f"{r['grok_mean']:.0f}\n{r['grokked']}/{r['n']}", ha="center", va="center", fontsize=7)
            else:
                ax.text(j, i, "!" if r["failed"] == r["n"] else "x", ha="center", va="center", color="red", fontsize=12)
        image = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis_r", norm=norm, aspect="auto", origin="lower")
        ax.set_facecolor("#dddddd")
        ax.set_xticks(range(len(xs)), [_text(v) for v in xs], rotation=45)
        ax.set_yticks(range(len(ys)), [_text(v) for v in ys])
        ax.set_xlabel(labels[0] if labels else x)
        ax.set_ylabel(labels[1] if labels else y)
        ax.set_title(f"{title}: grok epoch (x = never grokked)\n{name}", fontsize=8)
        if means:
            fig.colorbar(image, ax=ax, label="mean grok epoch")
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_phase_diagram(rows: list[dict], path: Path, title: str, rest: list[str] = ()) -> None:
    """Ratio x weight decay -> mean grok epoch (seed 003's question); one panel per split protocol and per value of
    any other swept key."""
    plot_grid(rows, "ratio", "wd", list(rest), path, title, ("d_model / p", "weight decay"))


def plot_one_axis(rows: list[dict], x: str, path: Path, title: str) -> None:
    """A sweep of one key: grok epoch (mean, min-max over the seeds that grokked) and the share of seeds that
    grokked against it, one line per split protocol. Values are placed in order, evenly (numbers or names)."""
    xs = sorted({r.get(x) for r in rows}, key=_key)
    fig, (left, right) = plt.subplots(1, 2, figsize=(max(7, 1.2 * len(xs) + 4), 3.8))
    for n, (name, mine) in enumerate(_panels(rows, []).items()):
        mine = sorted(mine, key=lambda r: _key(r.get(x)))
        pos = [xs.index(r.get(x)) for r in mine]
        grokked = [(p, r) for p, r in zip(pos, mine) if r["grok_mean"] is not None]
        if grokked:
            mean = np.array([r["grok_mean"] for _, r in grokked])
            spread = [mean - [r["grok_min"] for _, r in grokked], [r["grok_max"] for _, r in grokked] - mean]
            left.errorbar([p for p, _ in grokked], mean, yerr=spread, marker="o", capsize=4, label=name)
        right.plot(pos, [r["share_grokked"] if r["share_grokked"] is not None else np.nan for r in mine], "o-",
                   label=name)  # fmt: skip
        never = [p for p, r in zip(pos, mine) if r["grok_mean"] is None]
        if never:
            left.scatter(never, [0.02 + 0.04 * n] * len(never), marker="x", color="tab:red",
                         transform=left.get_xaxis_transform(), label=f"{name}: no seed grokked")  # fmt: skip
    for ax in (left, right):
        ax.set_xlim(-0.5, len(xs) - 0.5)
        ax.set_xticks(range(len(xs)), [_text(v) for v in xs], rotation=30)
        ax.set_xlabel(x)
        ax.grid(alpha=0.3)
    left.set_ylabel("grok epoch (mean, min-max over seeds)")
    right.set_ylabel("share of seeds that grokked")
    right.set_ylim(-0.05, 1.05)
    left.set_title(f"{title}: grok epoch by {x}", fontsize=9)
    right.set_title(f"{title}: share grokked by {x}", fontsize=9)
    _legend(left, fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_sweep(rows: list[dict], axes: list[str], path: Path, title: str) -> None:
    """The sweep's figure, by what it swept: ratio x weight decay as the phase diagram (one panel per value of any
    other key); one other axis: grok epoch and share grokked against it; two: a grid; more: a grid of the first
    two per value of the rest. A swept ratio and the width it became are one axis."""
    shown = [a for a in axes if not (a == "model.d_model" and "model.ratio" in axes)]
    ratio_like = [a for a in shown if a in RATIO_AXES]
    wd_like = [a for a in shown if a in WD_AXES]
    if not shown or (ratio_like and wd_like):
        plot_phase_diagram(rows, path, title, [a for a in shown if a not in RATIO_AXES + WD_AXES])
    elif len(shown) == 1:
        plot_one_axis(rows, shown[0], path, title)
    else:
        plot_grid(rows, shown[0], shown[1], shown[2:], path, title)


def _legend(ax, **kwargs) -> None:
    """A legend where the axes hold labelled artists (matplotlib warns on an empty one)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kwargs)


def plot_boundary(boundary: list[dict], rows: list[dict], path: Path, title: str, share: float) -> None:
    """A boundary search: every evaluated ratio x weight decay (o: at least `share` of its seeds grokked, x: fewer),
    the critical point of each searched value with its bracket, and the boundary through them."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        done = r["n"] - r["failed"]
        grokked = done and r["grokked"] >= share * done - 1e-9
        ax.scatter(r["ratio"], r["wd"], marker="o" if grokked else "x", s=30 + 15 * r["n"],
                   facecolors="none" if grokked else None, edgecolors="tab:green" if grokked else None,
                   c=None if grokked else "tab:red", zorder=3)  # fmt: skip
    ratio_mode = all(b["mode"] == "ratio" for b in boundary)
    found = sorted((b for b in boundary if b["critical"] is not None), key=lambda b: b["axis"])
    for b in boundary:
        lo, hi = b["bracket_lo"], b["bracket_hi"]
        if lo is None or hi is None:
            continue
        if ratio_mode:  # the bracket along the ratio at this weight decay
            ax.plot([lo, hi], [b["axis"], b["axis"]], color="black", lw=4, alpha=0.25, solid_capstyle="butt")
        else:
            ax.plot([b["axis"], b["axis"]], [lo, hi], color="black", lw=4, alpha=0.25, solid_capstyle="butt")
    if found:
        xs = [b["critical"] if ratio_mode else b["axis"] for b in found]
        ys = [b["axis"] if ratio_mode else b["critical"] for b in found]
        ax.plot(xs, ys, color="black", marker="D", ms=6, label="critical " + ("ratio" if ratio_mode else "wd"))
        _legend(ax, fontsize=8, loc="best")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("d_model / p")
    ax.set_ylabel("weight decay")
    ax.set_title(f"{title}: boundary search (o grokked, x not; bars: brackets)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def connect(db_path: Path | str) -> sqlite3.Connection:
    """Read-only: drawing figures never changes the database."""
    db_path = Path(db_path)
    if not db_path.is_file():
        raise ValueError(f"{db_path}: no such database (build it with scripts/build_db.py)")
    con = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        con.execute("SELECT 1 FROM runs, experiments LIMIT 1").fetchall()
    except sqlite3.DatabaseError as exc:
        con.close()
        raise ValueError(f"{db_path}: not a grokpipe results database ({exc})") from None
    con.row_factory = sqlite3.Row
    return con


def experiments(con: sqlite3.Connection) -> list[str]:
    return [r[0] for r in con.execute("SELECT name FROM experiments ORDER BY name")]


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _cells(con: sqlite3.Connection, experiment: str | None) -> list[dict]:
    """Per wd x ratio: n, grokked, failed and grok epoch mean/min/max, for one experiment or the whole database."""
    if experiment is None:
        rows = con.execute("SELECT * FROM phase_boundary").fetchall()
    else:
        rows = con.execute("SELECT * FROM ratio_sweep_stats WHERE experiment = ?", (experiment,)).fetchall()
    return [dict(r) for r in rows]


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _wd_colors(wds) -> dict:
    cmap = plt.get_cmap("tab10")
    return {wd: cmap(i % 10) for i, wd in enumerate(sorted(wds))}


def _ratio_axis(ax, ratios) -> None:
    """Log x with a tick at every ratio that was run, written as numbers rather than powers of two."""
    ax.set_xscale("log")
    ticks = sorted({round(r, 3) for r in ratios if r is not None})
    if ticks:
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    if len(ticks) == 1:  # one ratio: give it room instead of pinning it to the edge
        ax.set_xlim(ticks[0] / 1.5, ticks[0] * 1.5)


def _log_epochs(ax) -> None:
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # minor labels crowd short runs
    ax.set_xlabel("epoch")


def _where(experiment: str | None) -> tuple[str, tuple]:
    return ("WHERE experiment = ?", (experiment,)) if experiment is not None else ("", ())


def phase_diagram(con: sqlite3.Connection, path: Path, experiment: str | None = None) -> Path:
    """Ratio x weight decay -> mean grok epoch; x where no seed grokked (the sweep summary's own drawing)."""
    rows = [
        {"ratio": c["ratio"], "wd": c["wd"], "n": c["n"], "grokked": c["n_grokked"], "failed": c["n_failed"],
         "grok_mean": c["grok_mean"], "split": split.label(c.get("split"), [])}
        for c in _cells(con, experiment)
    ]  # fmt: skip
    if not rows:  # nothing has a known ratio: say so rather than draw an empty grid
        fig, ax = plt.subplots(figsize=(5, 3))
        ax.text(0.5, 0.5, "no run with a known d_model / p", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return _save(fig, path)
    plot_phase_diagram(rows, path, title=experiment or "all runs")
    return path


def grok_vs_ratio(con: sqlite3.Connection, path: Path, experiment: str | None = None) -> Path:
    """Mean grok epoch against d_model/p, one line per wd, min-max over seeds as bars: the U-shape question."""
    cells = _cells(con, experiment)
    colors = _wd_colors({c["wd"] for c in cells})
    protocols = sorted({c.get("split") or "-" for c in cells})  # one line per wd and split protocol, never pooled
    fig, ax = plt.subplots(figsize=(7, 4.5))
    grokked = [c for c in cells if c["grok_mean"] is not None]
    top = max((c["grok_max"] for c in grokked), default=1) * 1.6  # never-grokked cells sit above every grok
    lines = [(wd, color, prot) for wd, color in colors.items() for prot in protocols]
    for i, (wd, color, prot) in enumerate(lines):
        name = f"wd={wd:g}" + (f", split {split.label(prot, [])}" if len(protocols) > 1 else "")
        style = "--" if len(protocols) > 1 and prot != protocols[0] else "-"
        here = [c for c in cells if c["wd"] == wd and (c.get("split") or "-") == prot]
        mine = sorted((c for c in here if c["grok_mean"] is not None), key=lambda c: c["ratio"])
        if mine:
            x = [c["ratio"] for c in mine]
            mean = np.array([c["grok_mean"] for c in mine])
            spread = [mean - [c["grok_min"] for c in mine], [c["grok_max"] for c in mine] - mean]
            ax.errorbar(x, mean, yerr=spread, color=color, marker="o", capsize=4, linestyle=style, label=name)
        never = [c["ratio"] for c in here if c["grok_mean"] is None]
        if never:
            ax.scatter(never, [top * 1.12**i] * len(never), marker="x", s=60, color=color,
                       label=f"{name}: never grokked")  # fmt: skip
    _ratio_axis(ax, [c["ratio"] for c in cells])
    ax.set_yscale("log")
    ax.set_xlabel("d_model / p")
    ax.set_ylabel("grok epoch (mean, min-max over seeds)")
    ax.set_title(f"{experiment or 'all runs'}: grok epoch vs ratio", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    _legend(ax, fontsize=8, loc="best")
    return _save(fig, path)


def grok_gap(con: sqlite3.Connection, path: Path, experiment: str | None = None) -> Path:
    """grok_epoch - memorized_epoch against ratio: how long a run sits memorised before it generalises."""
    where, args = _where(experiment)
    clause = f"{where} {'AND' if where else 'WHERE'} grok_gap IS NOT NULL"
    runs = con.execute(f"SELECT ratio, wd, grok_gap FROM runs {clause} ORDER BY wd, ratio", args).fetchall()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = _wd_colors({r["wd"] for r in runs})
    for wd, color in colors.items():
        mine = [r for r in runs if r["wd"] == wd]
        ax.scatter([r["ratio"] for r in mine], [r["grok_gap"] for r in mine], color=color, alpha=0.6, s=25)
        ratios = sorted({round(r["ratio"], 6) for r in mine})
        means = [np.mean([r["grok_gap"] for r in mine if round(r["ratio"], 6) == x]) for x in ratios]
        ax.plot(ratios, means, "o-", color=color, mfc="none", ms=9, label=f"wd={wd:g} (mean)")
    if not runs:
        ax.text(0.5, 0.5, "no run both memorised and grokked", ha="center", va="center", transform=ax.transAxes)
    else:
        _ratio_axis(ax, [r["ratio"] for r in runs])
        _legend(ax, fontsize=8, loc="best")
    ax.set_xlabel("d_model / p")
    ax.set_ylabel("grok epoch - memorised epoch")
    ax.set_title(f"{experiment or 'all runs'}: memorisation-to-grok gap", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    return _save(fig, path)


def _runs_with_metrics(con: sqlite3.Connection, experiment: str) -> list[tuple[dict, dict]]:
    runs = con.execute(
        "SELECT run_id, d_model, ratio, wd, seed, grok_epoch FROM runs WHERE experiment = ? ORDER BY run_id",
        (experiment,),
    ).fetchall()
    out = []
    for r in runs:
        m = con.execute(
            "SELECT epoch, train_acc, val_acc, weight_norm FROM metrics WHERE run_id = ? ORDER BY epoch", (r["run_id"],)
        ).fetchall()
        if m:
            out.append((dict(r), {k: np.array([row[k] for row in m], dtype=float) for k in m[0].keys()}))
    return out


def _label(run: dict) -> str:
    return f"d={run['d_model']} wd={run['wd']:g} s={run['seed']}"


def _cell_colors(runs) -> dict:
    """A colour per cell of the sweep (d_model x weight decay, the seeds of a cell sharing it), named once in the
    legend: two widths at one weight decay are two labelled colours, not look-alike pairs."""
    keys = sorted({(r["d_model"], r["wd"]) for r in runs}, key=lambda k: (k[1] is None, k[1] or 0, k[0] or 0))
    cmap = plt.get_cmap("tab10" if len(keys) <= 10 else "tab20")
    return {k: cmap(i % cmap.N) for i, k in enumerate(keys)}


def _cell_name(key: tuple) -> str:
    d, wd = key
    return f"d_model={d}" + ("" if wd is None else f" wd={wd:g}")


def training_curves(con: sqlite3.Connection, path: Path, experiment: str) -> Path:
    """Train and val accuracy of every run of one experiment, overlaid, log epoch; colour = d_model/p."""
    data = _runs_with_metrics(con, experiment)
    ratios = sorted({r["ratio"] for r, _ in data if r["ratio"] is not None})
    by_ratio = len(ratios) > 1  # one ratio: a colour per run tells the runs apart instead
    norm = matplotlib.colors.LogNorm(ratios[0], ratios[-1]) if by_ratio else None
    cmap = plt.get_cmap("viridis")
    styles = dict(zip(sorted({r["wd"] for r, _ in data if r["wd"] is not None}), ["-", "--", ":", "-."] * 10))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for i, (run, m) in enumerate(data):
        color = cmap(norm(run["ratio"])) if by_ratio and run["ratio"] is not None else f"C{i % 10}"
        for ax, key in zip(axes, ("train_acc", "val_acc")):
            ax.plot(m["epoch"], m[key], styles.get(run["wd"], "-"), color=color, alpha=0.8, lw=1.2, label=_label(run))
    for ax, title in zip(axes, ("train accuracy", "val accuracy (line style = wd)")):
        _log_epochs(ax)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy")
    if len(data) <= 12:
        _legend(axes[1], fontsize=7, loc="best")
    if by_ratio:
        bar = fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=axes, label="d_model / p")
        bar.set_ticks(ratios, labels=[f"{r:.3g}" for r in ratios])
        bar.ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    fig.suptitle(f"{experiment}: {len(data)} runs")
    fig.savefig(path, dpi=DPI)  # no tight_layout: it cannot place a colorbar shared by two axes
    plt.close(fig)
    return path


def weight_norm(con: sqlite3.Connection, path: Path, experiment: str) -> Path:
    """Parameter L2 norm against epoch for every run of one experiment; colour = its cell (d_model, weight decay)."""
    data = _runs_with_metrics(con, experiment)
    colors = _cell_colors([r for r, _ in data])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    labelled = set()
    for run, m in data:
        key = (run["d_model"], run["wd"])
        ax.plot(m["epoch"], m["weight_norm"], color=colors[key], alpha=0.7,
                label=None if key in labelled else _cell_name(key))  # fmt: skip
        labelled.add(key)
        if run["grok_epoch"] is not None:  # where it grokked, on its own curve
            i = int(np.searchsorted(m["epoch"], run["grok_epoch"]))
            if i < len(m["epoch"]):
                ax.plot(m["epoch"][i], m["weight_norm"][i], "r*", ms=9)
    _log_epochs(ax)
    ax.set_ylabel("weight norm (L2 of all parameters)")
    ax.set_title(f"{experiment}: weight norm (* = grok)", fontsize=10)
    ax.grid(alpha=0.3)
    _legend(ax, fontsize=8, loc="best")
    return _save(fig, path)


# metrics columns drawn in the progress-measures figure: what a measure adds beyond loss, accuracy and the lr
BASE_METRICS = {"run_id", "epoch", "elapsed", "lr", "train_loss", "val_loss", "train_acc", "val_acc"}


def _measure_columns(con: sqlite3.Connection, experiment: str) -> list[str]:
    """The experiment's measure columns that hold a value (fourier_key*/fourier_norm_* are labels and spectra)."""
    have = [r[1] for r in con.execute("PRAGMA table_info(metrics)")]
    cols = [c for c in have if c not in BASE_METRICS and not c.startswith(("fourier_key", "fourier_norm_"))]
    where = "run_id IN (SELECT run_id FROM runs WHERE experiment = ?)"
    return [c for c in cols if con.execute(f'SELECT 1 FROM metrics WHERE {where} AND "{c}" IS NOT NULL LIMIT 1',
                                           (experiment,)).fetchone()]  # fmt: skip


def progress_measures(con: sqlite3.Connection, path: Path, experiment: str) -> Path:
    """Every measure column against epoch for every run of one experiment (colour = its cell: d_model and weight
    decay, named in the legend), each run's grok marked on its own curve: what moved before validation accuracy
    did."""
    cols = _measure_columns(con, experiment)
    runs = con.execute(
        "SELECT run_id, d_model, ratio, wd, seed, grok_epoch FROM runs WHERE experiment = ? ORDER BY run_id",
        (experiment,),
    ).fetchall()
    colors = _cell_colors(runs)
    n = max(len(cols), 1)
    per_row = min(n, 4)
    fig, axes = plt.subplots(-(-n // per_row), per_row, figsize=(4.2 * per_row, 3.4 * -(-n // per_row)), squeeze=False)
    flat = [a for row in axes for a in row]
    for ax, col in zip(flat, cols):
        labelled = set()
        for run in runs:
            m = con.execute(
                f'SELECT epoch, "{col}" AS v FROM metrics WHERE run_id = ? AND "{col}" IS NOT NULL ORDER BY epoch',
                (run["run_id"],),
            ).fetchall()
            if not m:
                continue
            e, v = np.array([r["epoch"] for r in m], float), np.array([r["v"] for r in m], float)
            key = (run["d_model"], run["wd"])
            ax.plot(e, v, color=colors[key], alpha=0.7, lw=1,
                    label=None if key in labelled else _cell_name(key))  # fmt: skip
            labelled.add(key)
            if run["grok_epoch"] is not None:
                i = int(np.searchsorted(e, run["grok_epoch"]))
                if i < len(e):
                    ax.plot(e[i], v[i], "r*", ms=8)
        _log_epochs(ax)
        if col.endswith("loss"):
            ax.set_yscale("log")
        ax.set_title(col, fontsize=9)
        ax.grid(alpha=0.3)
    for ax in flat[len(cols) :]:
        ax.set_visible(False)
    if not cols:
        flat[0].set_visible(True)
        flat[0].text(0.5, 0.5, "no measure beyond loss and accuracy", ha="center", transform=flat[0].transAxes)
    elif len(runs) and flat[0].get_legend_handles_labels()[0]:
        flat[0].legend(fontsize=7, loc="best")
    fig.suptitle(f"{experiment}: progress measures (* = grok)")
    fig.tight_layout()
    return _save(fig, path)


def hidden_progress(con: sqlite3.Connection, path: Path, experiment: str | None = None) -> Path:
    """Per thresholded measure: the epoch it crossed its threshold against the grok epoch, one point per run that
    did both. Above the diagonal, the measure moved first; the gap is the hidden progress."""
    where, args = _where(experiment)
    rows = con.execute(
        f"SELECT c.measure, c.epoch, r.grok_epoch, r.wd FROM crossings c JOIN runs r ON r.run_id = c.run_id "
        f"WHERE c.epoch IS NOT NULL AND r.grok_epoch IS NOT NULL{where.replace('WHERE', ' AND')}",
        args,
    ).fetchall()
    measures = sorted({r["measure"] for r in rows})
    fig, ax = plt.subplots(figsize=(6.5, 5))
    for i, name in enumerate(measures):
        pts = [(r["epoch"], r["grok_epoch"]) for r in rows if r["measure"] == name]
        ax.scatter(*zip(*pts), s=22, color=f"C{i}", label=f"{name} (n={len(pts)})", alpha=0.8)
    if rows:
        lo = min(min(r["epoch"], r["grok_epoch"]) for r in rows)
        hi = max(max(r["epoch"], r["grok_epoch"]) for r in rows)
        ax.plot([lo, hi], [lo, hi], "k:", lw=1, label="crossed = grokked")
        ax.set_xscale("log")
        ax.set_yscale("log")
        _legend(ax, fontsize=8, loc="best")
    else:
        ax.text(0.5, 0.5, "no run both crossed a threshold and grokked", ha="center", transform=ax.transAxes)
    ax.set_xlabel("epoch the measure crossed its threshold")
    ax.set_ylabel("grok epoch")
    ax.set_title(f"{experiment or 'all experiments'}: hidden progress (above the diagonal: measure first)", fontsize=9)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def write_figures(
    db_path: Path | str, out_dir: Path | str, fmt: str = "png", experiment: str | None = None
) -> list[Path]:
    """Every figure into out_dir; with `experiment`, only that experiment's runs. Returns the files written."""
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not allowed: one of {', '.join(FORMATS)}")
    out_dir = Path(out_dir)
    con = connect(db_path)
    try:
        names = experiments(con)
        if experiment is not None and experiment not in names:
            raise ValueError(f"experiment {experiment!r} is not in {db_path}; it holds: {', '.join(names)}")
        out_dir.mkdir(parents=True, exist_ok=True)
        written = [
            phase_diagram(con, out_dir / f"phase_diagram.{fmt}", experiment),
            grok_vs_ratio(con, out_dir / f"grok_vs_ratio.{fmt}", experiment),
            grok_gap(con, out_dir / f"grok_gap.{fmt}", experiment),
            hidden_progress(con, out_dir / f"hidden_progress.{fmt}", experiment),
        ]
        for name in [experiment] if experiment is not None else names:
            written.append(training_curves(con, out_dir / f"curves_{slug(name)}.{fmt}", name))
            written.append(weight_norm(con, out_dir / f"weight_norm_{slug(name)}.{fmt}", name))
            written.append(progress_measures(con, out_dir / f"measures_{slug(name)}.{fmt}", name))
    finally:
        con.close()
    return written
