"""`python -m grokpipe status|summarize SWEEP_DIR`: a sweep dir's state, or its summary rebuilt.

The commands are grokpipe.sweep.report's: they read the sweep dir's files, so they work whether or not the process
that launched the sweep is still there."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m grokpipe", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    st = sub.add_parser("status", help="where a sweep stands: done, running, pending, failed, grokked, time left")
    st.add_argument("sweep_dir", type=Path)
    st.add_argument("--watch", nargs="?", type=float, const=10.0, default=None, metavar="SECONDS",
                    help="redraw every SECONDS (10) until no cell is running or pending")  # fmt: skip
    sm = sub.add_parser("summarize", help="(re)build a sweep's summary, database and figures from its files")
    sm.add_argument("sweep_dir", type=Path)
    args = ap.parse_args(argv)
    import grokpipe.sweep.report as sweep_report

    if args.command == "status":
        return sweep_report.status(args.sweep_dir, args.watch)
    return sweep_report.summarize(args.sweep_dir)


if __name__ == "__main__":
    sys.exit(main())
