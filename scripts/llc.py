"""Local learning coefficient of one run over its checkpoints, with devinterp's SGLD (needs the llc extra).

    python scripts/llc.py RUN_DIR [--out DIR] [--epsilons 1e-4,3e-4,1e-3,3e-3] [--nbetas ...] [--localization 100]
        [--chains 2] [--draws 200] [--burnin 100] [--batch-size 256] [--tol 0.1] [--device cpu] [--threads 1]

Calibrates ε × nβ on the first and last checkpoints, estimates the LLC of every checkpoint on the train set, and
writes calibration.csv, llc.csv, calibration.png and llc.png to RUN_DIR/llc/ (or --out). See docs/analysis.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from grokpipe.analysis import AnalysisError
from grokpipe.llc import (
    CALIBRATION_FIELDS,
    LLC_FIELDS,
    MissingExtra,
    SGLDSettings,
    estimate_run,
    plot_llc,
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
    ap.add_argument("run_dir", type=Path, help="a run dir (outputs/DATE/TIME) with .hydra/, metrics.csv, checkpoints/")
    ap.add_argument("--out", type=Path, default=None, help="where to write (default RUN_DIR/llc)")
    ap.add_argument("--epsilons", type=floats, default=[1e-4, 3e-4, 1e-3, 3e-3], help="SGLD step sizes to calibrate")
    ap.add_argument("--nbetas", type=floats, default=None, help="inverse temperatures (default: nβ0/3, nβ0, 3nβ0)")
    ap.add_argument("--localization", type=float, default=100.0, help="γ, the pull towards the checkpoint")
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--burnin", type=int, default=100, help="SGLD steps per chain before the draws")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--tol", type=float, default=0.1, help="largest relative drift of a stable LLC trace")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="cpu, cuda, ...")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads while sampling")
    args = ap.parse_args(argv)
    try:
        require_devinterp()
    except MissingExtra as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for key in ("chains", "draws", "batch_size", "threads"):
        if getattr(args, key) < (8 if key == "draws" else 1):
            print(f"error: --{key.replace('_', '-')}={getattr(args, key)} is too small", file=sys.stderr)
            return 2
    if args.burnin < 0:
        print(f"error: --burnin={args.burnin} must be >= 0", file=sys.stderr)
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
    try:
        result = estimate_run(args.run_dir, base, args.epsilons, args.nbetas, args.tol)
    except AnalysisError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = args.out or args.run_dir / "llc"
    out.mkdir(parents=True, exist_ok=True)
    write_csv(result.calibration.rows, CALIBRATION_FIELDS, out / "calibration.csv")
    write_csv(result.rows, LLC_FIELDS, out / "llc.csv")
    figures = plot_llc(result, out)
    cal, s = result.calibration, result.settings
    note = "" if cal.stable else " (no cell was stable on both checkpoints: the least drifting one; widen the grid)"
    print(f"calibrated: epsilon={s.epsilon:g} nbeta={s.nbeta:.4g} localization={s.localization:g}{note}")
    for r in result.rows:
        val = "" if r["val_acc"] is None else f"  val_acc {r['val_acc']:.3f}"
        print(f"  epoch {r['epoch']:>7}: LLC {r['llc_mean']:9.3f} ± {r['llc_std']:.3f}{val}")
    print(f"-> {out}: calibration.csv, llc.csv, " + ", ".join(p.name for p in figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
