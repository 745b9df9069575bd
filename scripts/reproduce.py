"""Re-run a recorded run and report whether its numbers match: `python scripts/reproduce.py RUN_DIR [--epochs N]`.

RUN_DIR is a run dir (one run, or one cell of a sweep); `--db DB RUN_ID` takes the run dir from a results
database row instead. The recorded config trains again in a new dir (`--out`, default RUN_DIR.reproduce-N), then
metrics.csv is compared row by row (exact, within --rtol/--atol, or the first row where the runs part), the kept
checkpoints' weights bit for bit, and the provenance (commit, versions, device). Exit status 0 when the rows match
(exact or within the tolerance), 1 when the runs part, 2 for bad input.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from pathlib import Path

from grokpipe.core.errors import ConfigError, fail


def _from_db(db: Path, run_id: str) -> Path:
    if not db.is_file():
        fail(f"{db} is not a results database")
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            row = con.execute("SELECT run_dir FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    except sqlite3.DatabaseError as exc:
        fail(f"{db} is not a results database ({exc})")
    if row is None:
        fail(f"{db} has no run {run_id!r} (SELECT run_id FROM runs lists them)")
    return Path(row[0])


def _free_dir(run_dir: Path) -> Path:
    n = 1
    while (out := run_dir.with_name(f"{run_dir.name}.reproduce-{n}")).exists():
        n += 1
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.error = fail  # one line, like every other grokpipe error
    parser.add_argument("run", help="a run dir, or with --db a run_id of the database's runs table")
    parser.add_argument("--db", type=Path, default=None, help="results database to look the run up in")
    parser.add_argument("--epochs", type=int, default=None, help="re-run only the first N epochs")
    parser.add_argument("--out", type=Path, default=None, help="dir for the re-run (default RUN_DIR.reproduce-N)")
    parser.add_argument("--rtol", type=float, default=1e-4, help="relative tolerance of 'within tolerance'")
    parser.add_argument("--atol", type=float, default=1e-8, help="absolute tolerance of 'within tolerance'")
    args = parser.parse_args(argv)
    if args.epochs is not None and args.epochs < 1:
        fail(f"--epochs {args.epochs}: must be at least 1")
    if args.rtol < 0 or args.atol < 0:
        fail("--rtol and --atol must be non-negative")
    run_dir = _from_db(args.db, args.run) if args.db is not None else Path(args.run)
    from grokpipe.results.reproduce import describe, reproduce

    try:  # bad input fails before anything trains
        report = reproduce(run_dir, args.out or _free_dir(run_dir), args.epochs, args.rtol, args.atol)
    except ConfigError as exc:
        fail(str(exc))
    print(describe(report))
    return 1 if report["verdict"] == "parted" else 0


if __name__ == "__main__":
    sys.exit(main())
