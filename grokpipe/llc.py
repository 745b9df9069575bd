"""Local learning coefficient (LLC) over a run's checkpoints, estimated with devinterp's SGLD (seed 004).

The LLC of a checkpoint w* is estimated as nβ · (E[L(w)] − L(w*)), the expectation over SGLD draws from the
tempered posterior localised at w* (strength γ) on the train set. Two SGLD settings matter: the step size ε and the
inverse temperature nβ. `calibrate` runs a small ε × nβ grid on the first and the last checkpoint and keeps the
cells that are stable on both (Estimate.stable): a finite positive LLC, draws better than guessing, and a trace flat
over the draws after burn-in. Of those it picks, at the nβ nearest devinterp's default (batch / ln batch), the
smallest ε: the least discretisation bias whose chain still settles within the draws. `estimate_run` then estimates
every checkpoint with that cell.

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

from grokpipe.analysis import list_checkpoints, load_model, load_run_config, metrics_at, run_title
from grokpipe.losses import build_loss
from grokpipe.outputs import read_metrics
from grokpipe.tasks import build_task

MISSING_EXTRA = "the LLC needs the llc extra: pip install -e '.[llc]'"
LLC_FIELDS = ("epoch", "llc_mean", "llc_std", "init_loss", "train_loss", "val_loss", "train_acc", "val_acc")
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
    n_classes: int,
    loss,
    tol: float = 0.1,
) -> Calibration:
    """Estimate every ε × nβ cell on each given checkpoint; pick the smallest stable ε at the nβ nearest the default.

    Stable (Estimate.stable): a finite positive LLC, draws better than guessing (E[L] < ln n_classes), and a trace
    whose change over the draws is at most `tol` of its mean or within two standard errors of none.
    """
    chance_loss = math.log(n_classes)
    rows, traces, ok, worst = [], {}, {}, {}
    for eps in epsilons:
        for nb in nbetas:
            settings = SGLDSettings(**{**base.__dict__, "epsilon": eps, "nbeta": nb})
            for epoch, model in models.items():
                est = estimate_llc(model, x, y, settings, loss)
                stable = est.stable(tol, chance_loss)
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
    rows: list[dict]  # LLC_FIELDS, one per checkpoint
    calibration: Calibration
    settings: SGLDSettings
    title: str


def estimate_run(
    run_dir: Path,
    base: SGLDSettings,
    epsilons: list[float],
    nbetas: list[float] | None = None,
    tol: float = 0.1,
) -> RunLLC:
    """Calibrate ε × nβ on the first and last checkpoints, then estimate the LLC of every checkpoint on the train set.

    nbetas None: devinterp's default nβ and a third and three times it.
    """
    require_devinterp()
    cfg = load_run_config(run_dir)
    task, loss = build_task(cfg.task), build_loss(cfg.loss)
    data = task.split()
    checkpoints = list_checkpoints(run_dir)
    models = {e: load_model(cfg, task.spec, p).to(base.device) for e, p in checkpoints}
    nb0 = default_nbeta(min(base.batch_size, len(data.train_y)))
    nbetas = nbetas or [nb0 / 3, nb0, 3 * nb0]
    ends = {e: models[e] for e in (checkpoints[0][0], checkpoints[-1][0])}
    cal = calibrate(ends, data.train_x, data.train_y, base, epsilons, nbetas, task.spec.n_outputs, loss, tol)
    settings = SGLDSettings(**{**base.__dict__, "epsilon": cal.epsilon, "nbeta": cal.nbeta})

    metric_path = Path(run_dir) / "metrics.csv"
    metric_rows = read_metrics(metric_path) if metric_path.exists() else []
    rows = []
    for epoch, model in models.items():
        est = estimate_llc(model, data.train_x, data.train_y, settings, loss)
        m = metrics_at(metric_rows, epoch) or {}
        rows.append(
            {"epoch": epoch, "llc_mean": est.llc_mean, "llc_std": est.llc_std, "init_loss": est.init_loss}
            | {k: m.get(k) for k in ("train_loss", "val_loss", "train_acc", "val_acc")}
        )
    return RunLLC(rows, cal, settings, run_title(cfg))


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


def plot_llc(result: RunLLC, out_dir: Path) -> list[Path]:
    """llc.png (LLC against train and val loss over epochs) and calibration.png (the ε × nβ grid and chosen traces)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s, cal = result.settings, result.calibration
    rows = result.rows
    epochs = [r["epoch"] for r in rows]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for key, style in (("train_loss", "C0-"), ("val_loss", "C1-")):
        pts = [(r["epoch"], r[key]) for r in rows if r[key] is not None and r[key] > 0]
        if pts:
            ax.plot(*zip(*pts), style, marker="o", ms=3, label=key.replace("_", " "))
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy loss")
    ax.grid(alpha=0.3)
    ax2 = ax.twinx()
    mean = [r["llc_mean"] for r in rows]
    std = [r["llc_std"] for r in rows]
    ax2.errorbar(epochs, mean, yerr=std, color="C2", marker="s", ms=4, capsize=3, label="LLC (train set)")
    ax2.set_ylabel("LLC", color="C2")
    handles = [h for a in (ax, ax2) for h in a.get_legend_handles_labels()[0]]
    labels = [lab for a in (ax, ax2) for lab in a.get_legend_handles_labels()[1]]
    ax.legend(handles, labels, fontsize=8, loc="upper right")
    ax.set_title(
        f"LLC over training: ε={s.epsilon:g}, nβ={s.nbeta:.3g}, γ={s.localization:g}, "
        f"{s.num_chains} chains x {s.num_draws} draws after {s.num_burnin} burn-in",
        fontsize=9,
    )
    fig.suptitle(result.title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out_dir / "llc.png", dpi=110)
    plt.close(fig)

    cal_epochs = sorted({r["epoch"] for r in cal.rows})
    nbetas = sorted({r["nbeta"] for r in cal.rows})
    fig, axes = plt.subplots(2, len(cal_epochs), figsize=(5.5 * len(cal_epochs), 8), squeeze=False)
    for col, epoch in enumerate(cal_epochs):
        top, bottom = axes[0, col], axes[1, col]
        for i, nb in enumerate(nbetas):
            cells = sorted(
                (r for r in cal.rows if r["epoch"] == epoch and r["nbeta"] == nb), key=lambda r: r["epsilon"]
            )
            top.plot([r["epsilon"] for r in cells], [r["llc_mean"] for r in cells], f"C{i}-", label=f"nβ={nb:.3g}")
            for r in cells:
                top.plot(r["epsilon"], r["llc_mean"], f"C{i}" + ("o" if r["stable"] else "x"), ms=7)
        top.axvline(cal.epsilon, color="grey", ls=":")
        top.set_xscale("log")
        top.set_yscale("log" if all(r["llc_mean"] > 0 for r in cal.rows if r["epoch"] == epoch) else "symlog")
        top.set_xlabel("ε (SGLD step size)")
        top.set_ylabel("LLC estimate")
        top.set_title(f"epoch {epoch}: o stable, x not", fontsize=9)
        top.grid(alpha=0.3)
        top.legend(fontsize=7)
        trace = cal.traces.get((cal.epsilon, cal.nbeta, epoch), [])
        running = [sum(trace[: i + 1]) / (i + 1) for i in range(len(trace))]
        bottom.plot(range(1, len(trace) + 1), trace, "C2-", alpha=0.4, lw=0.8, label="per draw")
        bottom.plot(range(1, len(trace) + 1), running, "k-", label="running mean")
        bottom.set_xlabel("draw")
        bottom.set_ylabel("nβ (L(w_t) − L(w*)), mean over chains")
        bottom.legend(fontsize=7)
        bottom.set_title(f"chosen ε={cal.epsilon:g}, nβ={cal.nbeta:.3g} at epoch {epoch}", fontsize=9)
        bottom.grid(alpha=0.3)
    fig.suptitle(f"{result.title}: ε × nβ calibration" + ("" if cal.stable else " (no stable cell)"), fontsize=9)
    fig.tight_layout()
    fig.savefig(out_dir / "calibration.png", dpi=110)
    plt.close(fig)
    return [out_dir / "llc.png", out_dir / "calibration.png"]
