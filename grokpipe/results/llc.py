"""Local learning coefficient (LLC) over a run's checkpoints, estimated with devinterp's SGLD (seed 004).

The LLC of a checkpoint w* is estimated as nβ · (E[L(w)] − L(w*)), the expectation over SGLD draws from the
tempered posterior localised at w* (strength γ) on the train set, under the run's own loss (cross-entropy, or the MSE
of a task with real targets). Two SGLD settings matter: the step size ε and the inverse temperature nβ. `calibrate`
runs a small ε × nβ grid on the first and the last checkpoint below chance and keeps the cells that are stable on both
(Estimate.stable): a finite positive LLC, draws better than guessing (`chance_loss`), and a trace flat over the draws
after burn-in. Of those it picks, at the nβ nearest devinterp's default (batch / ln batch), the smallest ε: the least
discretisation bias whose chain still settles within the draws. `estimate_run` then estimates every checkpoint (or
every k-th) with that cell.

devinterp is an optional extra (`pip install -e '.[llc]'`) and is imported only when an estimate is made.
"""

from __future__ import annotations

import csv
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from grokpipe.config.validate import budget
from grokpipe.core.outputs import read_metrics
from grokpipe.losses import build_loss
from grokpipe.results.analysis import list_checkpoints, load_model, load_run_config, metrics_at, run_title
from grokpipe.tasks import build_task

MISSING_EXTRA = "the LLC needs the llc extra: pip install -e '.[llc]'"
LLC_BASE_FIELDS = ("epoch", "llc_mean", "llc_std", "init_loss", "train_loss", "val_loss")
LLC_FIELDS = (*LLC_BASE_FIELDS, "train_acc", "val_acc")  # a classification task's llc.csv (llc_fields in general)
CALIBRATION_FIELDS = (
    "epsilon",
    "nbeta",
    "epoch",
    "llc_mean",
    "llc_std",
    "init_loss",
    "mean_loss",
    "drift",
    "drift_z",
    "stable",
)


class MissingExtra(ImportError):
    """devinterp is not installed; str() is the one line shown to the user."""


@dataclass
class SGLDSettings:
    """What one LLC estimate runs: SGLD step size, inverse temperature, localisation, chains, draws, batch size."""

    epsilon: float
    nbeta: float
    localization: float = 100.0
    num_chains: int = 2
    num_draws: int = 200
    num_burnin: int = 100  # SGLD steps dropped before the draws: the chain's climb away from w* is not the posterior
    batch_size: int = 256
    seed: int = 0
    device: str = "cpu"
    threads: int = 1  # torch CPU threads while sampling: tiny SGLD steps only pay sync overhead for more


@dataclass
class Estimate:
    llc_mean: float
    llc_std: float  # across chains
    init_loss: float  # L(w*) on the train set
    mean_loss: float  # E[L(w)] over the draws: init_loss + llc_mean / nβ
    trace: list[float] = field(repr=False)  # nβ (L(w_t) − L(w*)) per draw, averaged over chains
    drift: float = math.inf  # change of the trace over the draws (least-squares slope x draws) / its mean
    drift_z: float = math.inf  # that slope in standard errors: below 2 it is not told apart from noise

    def stable(self, tol: float, chance_loss: float) -> bool:
        """Finite, positive, still inside the basin (better than guessing), and flat over the draws."""
        if not (math.isfinite(self.llc_mean) and self.llc_mean > 0 and self.mean_loss < chance_loss):
            return False
        return self.drift <= tol or abs(self.drift_z) <= 2


def require_devinterp():
    """The devinterp modules the estimate uses; MissingExtra if the llc extra is not installed."""
    try:
        from devinterp.optim import SGMCMC
        from devinterp.slt.sampler import estimate_learning_coeff_with_summary
    except ImportError as exc:
        raise MissingExtra(MISSING_EXTRA) from exc
    return SGMCMC, estimate_learning_coeff_with_summary


def llc_fields(task) -> tuple[str, ...]:
    """llc.csv's columns for a task: the LLC, L(w*), and the losses and the task's metrics from metrics.csv."""
    return (*LLC_BASE_FIELDS, *(f"{s}_{m}" for m in task.metric_names for s in ("train", "val")))


def chance_loss(spec, y: torch.Tensor) -> float:
    """The loss of a guess that does not read the input: ln(classes) for class logits (uniform), and for real targets
    the mean squared error of each position's mean target over `y` (the train set)."""
    if spec.output == "classes":
        return math.log(spec.n_outputs)
    return float(y.double().var(0, unbiased=False).mean())


def default_nbeta(batch_size: int) -> float:
    """devinterp's default inverse temperature: batch / ln(batch)."""
    return batch_size / math.log(batch_size)


def _evaluator(loss):
    """devinterp's evaluate(model, batch): the run's own loss (grokpipe.losses) on one batch."""

    def evaluate(model: nn.Module, batch) -> torch.Tensor:
        x, y = batch
        return loss(model(x)[None], y[None])[0]

    return evaluate


def trace_drift(trace: list[float]) -> tuple[float, float]:
    """Relative change of the trace over the draws from its least-squares slope, and the slope in standard errors."""
    n = len(trace)
    if n < 3 or not all(math.isfinite(v) for v in trace):
        return math.inf, math.inf
    t = torch.arange(n, dtype=torch.float64)
    v = torch.tensor(trace, dtype=torch.float64)
    tc = t - t.mean()
    slope = float((tc * (v - v.mean())).sum() / (tc**2).sum())
    resid = v - v.mean() - slope * tc
    se = math.sqrt(float((resid**2).sum()) / (n - 2) / float((tc**2).sum()))
    mean = float(v.mean())
    drift = abs(slope) * n / abs(mean) if mean else math.inf
    return drift, (slope / se if se > 0 else (0.0 if slope == 0 else math.inf))


def estimate_llc(model: nn.Module, x: torch.Tensor, y: torch.Tensor, s: SGLDSettings, loss) -> Estimate:
    """One LLC estimate of `model` on (x, y) under the run's `loss` (grokpipe.losses).
    A chain that produces NaN gives a NaN estimate instead of an error."""
    from torch.utils.data import DataLoader, TensorDataset

    sgmcmc, estimate = require_devinterp()
    loader = DataLoader(
        TensorDataset(x, y), batch_size=s.batch_size, shuffle=True, generator=torch.Generator().manual_seed(s.seed)
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(s.threads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # devinterp warns on every seeded call and on its own deprecations
        try:
            out = estimate(
                model,
                loader,
                evaluate=_evaluator(loss),
                sampling_method=sgmcmc.sgld,
                optimizer_kwargs={"lr": s.epsilon, "nbeta": s.nbeta, "localization": s.localization},
                num_chains=s.num_chains,
                num_draws=s.num_draws,
                num_burnin_steps=s.num_burnin,
                seed=s.seed,
                device=torch.device(s.device),
                verbose=False,
                online=True,
            )
        except RuntimeError as exc:
            if "NaN" not in str(exc):
                raise
            return Estimate(math.nan, math.nan, math.nan, math.nan, [])
        finally:
            torch.set_num_threads(threads)
    trace = [float(v) for v in out["llc/trace"].mean(0)]
    per_chain = out["llc/trace"].mean(1)
    mean = float(per_chain.mean())
    std = float(per_chain.std(ddof=1)) if len(per_chain) > 1 else 0.0
    init_loss = float(out["init_loss"])
    return Estimate(mean, std, init_loss, init_loss + mean / s.nbeta, trace, *trace_drift(trace))


@dataclass
class Calibration:
    rows: list[dict]  # CALIBRATION_FIELDS, one per (epsilon, nbeta, checkpoint)
    epsilon: float
    nbeta: float
    stable: bool  # False: no cell was stable on every calibration checkpoint, the least drifting one was taken
    traces: dict = field(repr=False)  # (epsilon, nbeta, epoch) -> per-draw LLC trace


def calibrate(
    models: dict[int, nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    base: SGLDSettings,
    epsilons: list[float],
    nbetas: list[float],
    guess_loss: float,
    loss,
    tol: float = 0.1,
) -> Calibration:
    """Estimate every ε × nβ cell on each given checkpoint; pick the smallest stable ε at the nβ nearest the default.

    Stable (Estimate.stable): a finite positive LLC, draws better than guessing (E[L] < `guess_loss`, see
    chance_loss), and a trace whose change over the draws is at most `tol` of its mean or within two standard errors
    of none.
    """
    rows, traces, ok, worst = [], {}, {}, {}
    for eps in epsilons:
        for nb in nbetas:
            settings = SGLDSettings(**{**base.__dict__, "epsilon": eps, "nbeta": nb})
            for epoch, model in models.items():
                est = estimate_llc(model, x, y, settings, loss)
                stable = est.stable(tol, guess_loss)
                rows.append(
                    {"epsilon": eps, "nbeta": nb, "epoch": epoch, "llc_mean": est.llc_mean, "llc_std": est.llc_std}
                    | {"init_loss": est.init_loss, "mean_loss": est.mean_loss, "drift": est.drift}
                    | {"drift_z": est.drift_z, "stable": stable}
                )
                traces[(eps, nb, epoch)] = est.trace
                ok[(eps, nb)] = ok.get((eps, nb), True) and stable
                worst[(eps, nb)] = max(worst.get((eps, nb), 0.0), est.drift)
    target = default_nbeta(min(base.batch_size, len(y)))
    cells = [c for c, good in ok.items() if good]
    if cells:
        nb = min({c[1] for c in cells}, key=lambda b: abs(math.log(b / target)))
        eps = min(c[0] for c in cells if c[1] == nb)
        return Calibration(rows, eps, nb, True, traces)
    eps, nb = min(worst, key=worst.get)
    return Calibration(rows, eps, nb, False, traces)


@dataclass
class RunLLC:
    rows: list[dict]  # `fields`, one per checkpoint estimated
    calibration: Calibration
    settings: SGLDSettings
    title: str
    fields: tuple[str, ...] = LLC_FIELDS  # llc.csv's columns (llc_fields of the run's task)
    metric: str = "acc"  # the task's first metric (train_<metric>, val_<metric>): what llc_metric.png draws
    count: str = "epoch"  # what the checkpoints' numbers count: epoch, or step for a run in steps
    loss: str = "cross_entropy"  # the run's loss, the one the LLC is measured under


def calibration_ends(cfg, spec, checkpoints: list, x: torch.Tensor, y: torch.Tensor, loss, guess: float) -> dict:
    """The models of the first and the last checkpoint whose train loss is below `guess` (chance_loss): a chain from
    a checkpoint at chance has no basin to stay in, so no cell could be stable there (a run that starts by predicting
    a constant, say). The first and last of all when none is below it."""
    below = []
    for epoch, path in checkpoints:
        model = load_model(cfg, spec, path)
        with torch.no_grad():
            if float(loss(model(x)[None], y[None])[0]) < guess:
                below.append((epoch, path))
    first, last = (below or checkpoints)[0], (below or checkpoints)[-1]
    return {e: load_model(cfg, spec, p) for e, p in (first, last)}


def estimated(checkpoints: list, every: int) -> list:
    """The checkpoints estimated: every `every`-th from the first, and the last."""
    picked = checkpoints[::every]
    return picked if picked[-1] == checkpoints[-1] else [*picked, checkpoints[-1]]


def estimate_run(
    run_dir: Path,
    base: SGLDSettings,
    epsilons: list[float],
    nbetas: list[float] | None = None,
    tol: float = 0.1,
    every: int = 1,
) -> RunLLC:
    """Calibrate ε × nβ on the first and last checkpoints below chance (`calibration_ends`), then estimate the LLC on
    the train set of every `every`-th checkpoint (and the last).

    nbetas None: devinterp's default nβ and a third and three times it.
    """
    require_devinterp()
    cfg = load_run_config(run_dir)
    task, loss = build_task(cfg.task), build_loss(cfg.loss)
    data = task.split()
    checkpoints = list_checkpoints(run_dir)
    picked = estimated(checkpoints, every)
    guess = chance_loss(task.spec, data.train_y)
    ends = calibration_ends(cfg, task.spec, checkpoints, data.train_x, data.train_y, loss, guess)
    ends = {e: model.to(base.device) for e, model in ends.items()}
    nb0 = default_nbeta(min(base.batch_size, len(data.train_y)))
    nbetas = nbetas or [nb0 / 3, nb0, 3 * nb0]
    cal = calibrate(ends, data.train_x, data.train_y, base, epsilons, nbetas, guess, loss, tol)
    settings = SGLDSettings(**{**base.__dict__, "epsilon": cal.epsilon, "nbeta": cal.nbeta})

    metric_path = Path(run_dir) / "metrics.csv"
    metric_rows = read_metrics(metric_path) if metric_path.exists() else []
    fields = llc_fields(task)
    rows = []
    for epoch, path in picked:
        model = ends[epoch] if epoch in ends else load_model(cfg, task.spec, path).to(base.device)
        est = estimate_llc(model, data.train_x, data.train_y, settings, loss)
        m = metrics_at(metric_rows, epoch) or {}
        rows.append(
            {"epoch": epoch, "llc_mean": est.llc_mean, "llc_std": est.llc_std, "init_loss": est.init_loss}
            | {k: m.get(k) for k in fields[len(LLC_BASE_FIELDS) - 2 :]}
        )
    count = budget(cfg.train)[1][:-1]
    return RunLLC(rows, cal, settings, run_title(cfg), fields, task.metric_names[0], count, cfg.loss.name)


def write_csv(rows: list[dict], fields: tuple[str, ...], path: Path) -> None:
    def cell(v) -> str:
        if v is None:
            return ""
        return str(v) if isinstance(v, (int, bool)) else f"{v:.6g}"

    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(fields)
        for r in rows:
            w.writerow([cell(r.get(k)) for k in fields])


def rank_correlation(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation of two equally long series (NaN pairs left out; ties get the mean rank)."""
    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None and math.isfinite(x) and math.isfinite(y)]
    if len(pairs) < 3:
        return math.nan

    def ranks(v: list[float]) -> torch.Tensor:
        t = torch.tensor(v, dtype=torch.float64)
        r = torch.empty_like(t)
        order = t.argsort()
        r[order] = torch.arange(len(v), dtype=torch.float64)
        for value in t.unique():  # ties: their mean rank
            tied = t == value
            r[tied] = r[tied].mean()
        return r

    ra, rb = ranks([x for x, _ in pairs]), ranks([y for _, y in pairs])
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = float((ra.square().sum() * rb.square().sum()).sqrt())
    return float((ra * rb).sum()) / denom if denom else math.nan


def plot_llc(result: RunLLC, out_dir: Path) -> list[Path]:
    """llc.png (the LLC with train and val loss over the checkpoints, and against val loss), llc_metric.png (the
    task's metric on train and val with the LLC on a twin axis: seed 004's first figure) and calibration.png (the
    ε × nβ grid, LLC / nβ, and the chosen cell's traces)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s, cal = result.settings, result.calibration
    rows, count = result.rows, result.count
    epochs = [r["epoch"] for r in rows]
    mean = [r["llc_mean"] for r in rows]
    std = [r["llc_std"] for r in rows]
    setting = (
        f"ε={s.epsilon:g}, nβ={s.nbeta:.3g}, γ={s.localization:g}, "
        f"{s.num_chains} chains x {s.num_draws} draws after {s.num_burnin} burn-in"
    )

    def llc_axis(ax):
        twin = ax.twinx()
        twin.errorbar(epochs, mean, yerr=std, color="C2", marker="s", ms=3, capsize=2, label="LLC (train set)")
        twin.set_ylabel("LLC", color="C2")
        handles = [h for a in (ax, twin) for h in a.get_legend_handles_labels()[0]]
        labels = [lab for a in (ax, twin) for lab in a.get_legend_handles_labels()[1]]
        ax.legend(handles, labels, fontsize=8, loc="upper right")

    def curves(ax, keys: tuple[str, str], log: bool) -> None:
        for key, style in zip(keys, ("C0-", "C1-")):
            pts = [(r["epoch"], r[key]) for r in rows if r.get(key) is not None and (r[key] > 0 or not log)]
            if pts:
                ax.plot(*zip(*pts), style, marker="o", ms=2, label=key.replace("_", " "))
        if log:
            ax.set_yscale("log")
        ax.set_xlabel(count)
        ax.grid(alpha=0.3)

    fig, (ax, right) = plt.subplots(1, 2, figsize=(13, 4.5), gridspec_kw={"width_ratios": [3, 2]})
    curves(ax, ("train_loss", "val_loss"), log=True)
    ax.set_ylabel(f"{result.loss} loss")
    llc_axis(ax)
    ax.set_title(f"LLC over training: {setting}", fontsize=9)
    val = [r.get("val_loss") for r in rows]
    pts = [(v, m, e) for v, m, e in zip(val, mean, epochs) if v is not None and v > 0 and math.isfinite(m)]
    if pts:
        scatter = right.scatter([p[0] for p in pts], [p[1] for p in pts], c=[p[2] for p in pts], cmap="viridis", s=18)
        fig.colorbar(scatter, ax=right, label=count)
        right.set_xscale("log")
    rho = rank_correlation(val, mean)
    right.set_xlabel("val loss")
    right.set_ylabel("LLC (train set)")
    right.set_title(f"LLC against val loss: Spearman ρ = {rho:.2f}", fontsize=9)
    right.grid(alpha=0.3)
    fig.suptitle(result.title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out_dir / "llc.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 4.5))
    metric = result.metric
    curves(ax, (f"train_{metric}", f"val_{metric}"), log=False)
    ax.set_ylabel(metric)
    llc_axis(ax)
    ax.set_title(f"train and val {metric} with the LLC: {setting}", fontsize=9)
    fig.suptitle(result.title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out_dir / "llc_metric.png", dpi=110)
    plt.close(fig)

    cal_epochs = sorted({r["epoch"] for r in cal.rows})
    nbetas = sorted({r["nbeta"] for r in cal.rows})
    fig, axes = plt.subplots(3, len(cal_epochs), figsize=(5.5 * len(cal_epochs), 11), squeeze=False)
    for col, epoch in enumerate(cal_epochs):
        top, middle, bottom = axes[0, col], axes[1, col], axes[2, col]
        for i, nb in enumerate(nbetas):
            cells = sorted(
                (r for r in cal.rows if r["epoch"] == epoch and r["nbeta"] == nb), key=lambda r: r["epsilon"]
            )
            for ax, scale in ((top, 1.0), (middle, nb)):
                ax.plot(
                    [r["epsilon"] for r in cells],
                    [r["llc_mean"] / scale for r in cells],
                    f"C{i}-",
                    label=f"nβ={nb:.3g}",
                )
                for r in cells:
                    ax.plot(r["epsilon"], r["llc_mean"] / scale, f"C{i}" + ("o" if r["stable"] else "x"), ms=7)
        mine = [r["llc_mean"] for r in cal.rows if r["epoch"] == epoch and math.isfinite(r["llc_mean"])]
        positive = all(v > 0 for v in mine)
        for ax, what, scale in ((top, "LLC estimate", 1.0), (middle, "LLC / nβ (= E[L] − L(w*))", max(nbetas))):
            ax.axvline(cal.epsilon, color="grey", ls=":")
            ax.set_xscale("log")
            if positive:
                ax.set_yscale("log")
            else:  # linear around 0 only down to the smallest value drawn, so the small ones keep their place
                small = min((abs(v) / scale for v in mine if v), default=1.0)
                ax.set_yscale("symlog", linthresh=small)
            ax.set_xlabel("ε (SGLD step size)")
            ax.set_ylabel(what)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        top.set_title(f"{count} {epoch}: o stable, x not", fontsize=9)
        trace = cal.traces.get((cal.epsilon, cal.nbeta, epoch), [])
        running = [sum(trace[: i + 1]) / (i + 1) for i in range(len(trace))]
        bottom.plot(range(1, len(trace) + 1), trace, "C2-", alpha=0.4, lw=0.8, label="per draw")
        bottom.plot(range(1, len(trace) + 1), running, "k-", label="running mean")
        bottom.set_xlabel("draw")
        bottom.set_ylabel("nβ (L(w_t) − L(w*)), mean over chains")
        bottom.legend(fontsize=7)
        bottom.set_title(f"chosen ε={cal.epsilon:g}, nβ={cal.nbeta:.3g} at {count} {epoch}", fontsize=9)
        bottom.grid(alpha=0.3)
    fig.suptitle(f"{result.title}: ε × nβ calibration" + ("" if cal.stable else " (no stable cell)"), fontsize=9)
    fig.tight_layout()
    fig.savefig(out_dir / "calibration.png", dpi=110)
    plt.close(fig)
    return [out_dir / "llc.png", out_dir / "llc_metric.png", out_dir / "calibration.png"]


def plot_llc_runs(results: list[RunLLC], path: Path) -> Path:
    """Several runs (e.g. seeds) side by side: the task's metric on train (dashed) and val (solid), the LLC, and the
    LLC against val loss with each run's Spearman ρ, one colour per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = results[0]
    metric, count = first.metric, first.count
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(17, 4.8))
    for i, result in enumerate(results):
        rows, color, name = result.rows, f"C{i}", result.title.rsplit(", ", 1)[-1]
        epochs = [r["epoch"] for r in rows]
        for split, style in (("train", "--"), ("val", "-")):
            pts = [(r["epoch"], r[f"{split}_{metric}"]) for r in rows if r.get(f"{split}_{metric}") is not None]
            if pts:
                left.plot(*zip(*pts), style, color=color, lw=1.2, label=f"{name} {split}")
        middle.errorbar(
            epochs, [r["llc_mean"] for r in rows], yerr=[r["llc_std"] for r in rows], color=color, marker="s", ms=2,
            capsize=1.5, lw=1, label=name,
        )  # fmt: skip
        val, llc = [r.get("val_loss") for r in rows], [r["llc_mean"] for r in rows]
        pts = [(v, m) for v, m in zip(val, llc) if v is not None and v > 0 and math.isfinite(m)]
        if pts:
            right.scatter(*zip(*pts), color=color, s=12, label=f"{name}: ρ = {rank_correlation(val, llc):.2f}")
    for ax, ylabel in ((left, metric), (middle, "LLC (train set)")):
        ax.set_xlabel(count)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    left.set_title(f"train (dashed) and val (solid) {metric}", fontsize=9)
    s = first.settings
    alike = all(r.settings == s for r in results)  # else each run's LLC is on its own calibrated scale
    setting = f"ε={s.epsilon:g}, nβ={s.nbeta:.3g}, γ={s.localization:g}, {s.num_chains}x{s.num_draws} draws"
    middle.set_title(f"LLC: {setting}" if alike else "LLC: each run at its own calibrated ε, nβ", fontsize=9)
    right.set_xscale("log")
    right.set_xlabel("val loss")
    right.set_ylabel("LLC (train set)")
    right.set_title("LLC against val loss (Spearman ρ per run)", fontsize=9)
    right.grid(alpha=0.3)
    right.legend(fontsize=7)
    fig.suptitle(first.title.rsplit(", ", 1)[0] + f": {len(results)} runs", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
