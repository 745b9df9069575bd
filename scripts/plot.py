"""Figures from a results database: `python scripts/plot.py DB --out DIR [--format png|svg|pdf] [--experiment NAME]`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from grokpipe.core.errors import fail
from grokpipe.results.figures import FORMATS, write_figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.error = fail  # one line, like every other grokpipe error
    parser.add_argument("db", type=Path, help="database built by scripts/build_db.py")
    parser.add_argument("--out", type=Path, required=True, help="dir for the figures")
    parser.add_argument("--format", choices=FORMATS, default="png")
    parser.add_argument("--experiment", default=None, help="only this experiment group (default: every one)")
    args = parser.parse_args(argv)
    try:
        written = write_figures(args.db, args.out, args.format, args.experiment)
    except ValueError as exc:
        fail(str(exc))
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
