"""Local learning coefficient of one run over its checkpoints, with devinterp's SGLD (needs the llc extra).

    python scripts/llc.py RUN_DIR [RUN_DIR ...] [--out DIR] [--epsilons 1e-4,3e-4,1e-3,3e-3] [--nbetas ...]
        [--localization 100] [--chains 2] [--draws 200] [--burnin 100] [--batch-size 256] [--tol 0.1] [--every 1]
        [--device cpu] [--threads 1]

Calibrates ε × nβ on the first and last checkpoints, estimates the LLC of every checkpoint (or every --every-th, and
the last) on the train set under the run's own loss, and writes calibration.csv, llc.csv, calibration.png, llc.png
and llc_metric.png to RUN_DIR/llc/ (or --out). Several run dirs (seeds of one setting, say) each get theirs in
--out/<run dir's name>/, and --out/llc_runs.png draws them together. See docs/analysis.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from grokpipe.results.analysis import AnalysisError
from grokpipe.results.llc import (
    CALIBRATION_FIELDS,
    MissingExtra,
    SGLDSettings,
    estimate_run,
    plot_llc,
    plot_llc_runs,
    rank_correlation,
    require_devinterp,
    write_csv,
)


def floats(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: every value must be > 0")
    return values


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "run_dirs", type=Path, nargs="+", help="run dirs (outputs/DATE/TIME) with .hydra/, metrics.csv, checkpoints/"
    )
    ap.add_argument("--out", type=Path, default=None, help="where to write (default RUN_DIR/llc; several runs: needed)")
    ap.add_argument("--epsilons", type=floats, default=[1e-4, 3e-4, 1e-3, 3e-3], help="SGLD step sizes to calibrate")
    ap.add_argument("--nbetas", type=floats, default=None, help="inverse temperatures (default: nβ0/3, nβ0, 3nβ0)")
    ap.add_argument("--localization", type=float, default=100.0, help="γ, the pull towards the checkpoint")
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--burnin", type=int, default=100, help="SGLD steps per chain before the draws")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--tol", type=float, default=0.1, help="largest relative drift of a stable LLC trace")
    ap.add_argument("--every", type=int, default=1, help="estimate every k-th checkpoint (and the last)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="cpu, cuda, ...")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads while sampling")
    args = ap.parse_args(argv)
    try:
        require_devinterp()
    except MissingExtra as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for key in ("chains", "draws", "batch_size", "threads", "every"):
        if getattr(args, key) < (8 if key == "draws" else 1):
            print(f"error: --{key.replace('_', '-')}={getattr(args, key)} is too small", file=sys.stderr)
            return 2
    if args.burnin < 0:
        print(f"error: --burnin={args.burnin} must be >= 0", file=sys.stderr)
        return 2
    several = len(args.run_dirs) > 1
    if several and args.out is None:
        print(f"error: {len(args.run_dirs)} run dirs need --out DIR (each gets DIR/<its name>/)", file=sys.stderr)
        return 2
    base = SGLDSettings(
        epsilon=args.epsilons[0],
        nbeta=1.0,
        localization=args.localization,
        num_chains=args.chains,
        num_draws=args.draws,
        num_burnin=args.burnin,
        batch_size=args.batch_size,
        seed=args.seed,
        device=args.device,
        threads=args.threads,
    )
    results = []
    for run_dir in args.run_dirs:
        try:
            result = estimate_run(run_dir, base, args.epsilons, args.nbetas, args.tol, args.every)
        except AnalysisError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        out = args.out / run_dir.name if several else (args.out or run_dir / "llc")
        report(result, out, run_dir if several else None)
        results.append(result)
    if several:
        print(f"-> {plot_llc_runs(results, args.out / 'llc_runs.png')}")
    return 0


def report(result, out: Path, run_dir: Path | None) -> None:
    """One run's tables and figures in `out`, and its numbers on stdout."""
    out.mkdir(parents=True, exist_ok=True)
    if run_dir is not None:
        print(f"{run_dir}:")
    write_csv(result.calibration.rows, CALIBRATION_FIELDS, out / "calibration.csv")
    write_csv(result.rows, result.fields, out / "llc.csv")
    figures = plot_llc(result, out)
    cal, s = result.calibration, result.settings
    note = "" if cal.stable else " (no cell was stable on both checkpoints: the least drifting one; widen the grid)"
    print(f"calibrated: epsilon={s.epsilon:g} nbeta={s.nbeta:.4g} localization={s.localization:g}{note}")
    key = f"val_{result.metric}"
    for r in result.rows:
        val = "" if r.get(key) is None else f"  {key} {r[key]:.4g}"
        print(f"  {result.count} {r['epoch']:>7}: LLC {r['llc_mean']:9.4g} ± {r['llc_std']:.3g}{val}")
    rho = rank_correlation([r["val_loss"] for r in result.rows], [r["llc_mean"] for r in result.rows])
    print(f"LLC against val loss over the checkpoints: Spearman rho {rho:.3f}")
    print(f"-> {out}: calibration.csv, llc.csv, " + ", ".join(p.name for p in figures))


if __name__ == "__main__":
    sys.exit(main())
