"""Build the results database from a results dir: `python scripts/build_db.py RESULTS_DIR [--db PATH] [--update]`.

RESULTS_DIR is walked for run dirs (summary.json or .hydra/config.yaml): outputs/, multirun/, one sweep, one run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from grokpipe.core.errors import fail
from grokpipe.results.database import build, update


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.error = fail  # one line, like every other grokpipe error
    parser.add_argument("results_dir", type=Path, help="dir holding run dirs and/or sweep dirs")
    parser.add_argument("--db", type=Path, default=None, help="database file (default: RESULTS_DIR/experiments.db)")
    parser.add_argument("--update", action="store_true", help="re-ingest only new and changed runs")
    args = parser.parse_args(argv)
    try:
        report = (update if args.update else build)(args.results_dir, args.db)
    except ValueError as exc:
        fail(str(exc))
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
