"""Representation analysis of one run over its checkpoints: cosine probe and Fourier spectrum of the embeddings.

    python scripts/analyze.py RUN_DIR [--out DIR] [--share 0.7] [--top-k 5] [--matrix-epoch N] [--no-fourier]

Writes analysis.csv and spectrum.png, fourier_share.png, cosine.png, cosine_matrix.png to RUN_DIR/analysis/
(or --out). See docs/analysis.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from grokpipe.results.analysis import AnalysisError, analyze_run, plot_analysis, write_analysis_csv


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path, help="a run dir (outputs/DATE/TIME) with .hydra/, metrics.csv, checkpoints/")
    ap.add_argument("--out", type=Path, default=None, help="where to write (default RUN_DIR/analysis)")
    ap.add_argument("--share", type=float, default=0.7, help="key frequencies: smallest set holding this share")
    ap.add_argument("--top-k", type=int, default=5, help="topk_share: the share of the k strongest frequencies")
    ap.add_argument("--matrix-epoch", type=int, default=None, help="checkpoint of the cosine matrix (default last)")
    ap.add_argument("--no-fourier", action="store_true", help="cosine probe only (needed for task=s5)")
    args = ap.parse_args(argv)
    if not 0 < args.share <= 1:
        print(f"error: --share={args.share} is not allowed: must lie in (0, 1]", file=sys.stderr)
        return 2
    if args.top_k < 1:
        print(f"error: --top-k={args.top_k} is not allowed: must be a positive integer", file=sys.stderr)
        return 2
    try:
        result = analyze_run(args.run_dir, args.share, args.top_k, not args.no_fourier, args.matrix_epoch)
    except AnalysisError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = args.out or args.run_dir / "analysis"
    out.mkdir(parents=True, exist_ok=True)
    write_analysis_csv(result.rows, out / "analysis.csv")
    figures = plot_analysis(result, out)
    first, last = result.rows[0], result.rows[-1]
    print(f"{len(result.rows)} checkpoints, epochs {first['epoch']}..{last['epoch']} -> {out}")
    for r in (first, last):
        line = f"  epoch {r['epoch']}: within {r['within_cos']:.3f} between {r['between_cos']:.3f}"
        if "topk_share" in r:
            line += f" top-{args.top_k} share {r['topk_share']:.3f} key freqs {r['key_freqs']} ({r['key_share']:.3f})"
        print(line)
    print("  " + ", ".join(p.name for p in [out / "analysis.csv", *figures]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
