"""A run's files: metrics.csv, summary.json and checkpoints. Their fields are the contract analysis reads.

metrics.csv   one row per evaluation: epoch, the enabled measures' columns, elapsed
summary.json  status, grokked, grok_epoch, memorized_epoch, final accuracies, epochs_run, wall_seconds,
              ratio = d_model / p, and the key hyperparameters
checkpoints/  what a checkpoint holds, its file names, save, load and listing: grokpipe.core.checkpoint (written
              through `atomic_write` here)
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import shutil
from pathlib import Path

# the columns of the default measures on a modular (a + b) task (conf/config.yaml); a run's own columns
# follow from its enabled measures (grokpipe.measures.columns)
METRIC_FIELDS = (
    "epoch", "train_loss", "val_loss", "train_acc", "val_acc", "weight_norm", "lr", "fourier_gini", "fourier_n_key",
    "fourier_key1", "fourier_key2", "fourier_key3", "embed_erank", "sc_share", "zero_loss_share", "restricted_loss",
    "excluded_loss", "elapsed",
)  # fmt: skip


NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class StorageError(OSError):
    """The output dir cannot take what the run must write (unwritable, full, over quota)."""


def atomic_write(path: Path, write, keep_previous: Path | None = None) -> None:
    """Write through a temp file, fsync, then rename: a kill or a full disk at any byte leaves the old file or the
    new one, never half. With `keep_previous`, the old file is kept under that name (a hard link, so `path`
    itself names a whole file at every moment) once the new one is safely on disk."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        if keep_previous is not None and path.exists():
            _keep(path, keep_previous)
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if _no_space(exc):
            raise StorageError(errno.ENOSPC, f"no space left writing {path}: {os.strerror(errno.ENOSPC)}") from exc
        raise


def _keep(path: Path, previous: Path) -> None:
    """`previous` becomes the file `path` names now, while `path` stays in place."""
    link = previous.with_name(f".{previous.name}.tmp")
    link.unlink(missing_ok=True)
    try:
        os.link(path, link)
    except OSError:  # a file system without hard links: a copy (its own error if the disk is full)
        shutil.copyfile(path, link)
    os.replace(link, previous)


def _no_space(exc: BaseException) -> bool:
    """A full disk or quota, however the writer reported it (torch.save wraps the OSError in a RuntimeError)."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in NO_SPACE:
            return True
        if isinstance(exc, RuntimeError) and "file write failed" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def check_storage(run_dir: Path, need_bytes: int) -> None:
    """Before training: the run dir takes a file and has room for what the run will write."""
    probe = run_dir / ".write_probe"
    try:
        atomic_write(probe, lambda fh: fh.write(b"ok"))
        probe.unlink()
    except OSError as exc:
        raise StorageError(exc.errno, f"output dir {run_dir} is not writable: {exc.strerror or exc}") from exc
    free = shutil.disk_usage(run_dir).free
    if free < need_bytes:
        raise StorageError(
            errno.ENOSPC,
            f"output dir {run_dir} has {free / 2**20:.1f} MiB free; this run needs "
            f"about {need_bytes / 2**20:.1f} MiB (checkpoints and metrics)",
        )


class MetricsLog:
    """Appends evaluation rows to metrics.csv under `fields` (the enabled measures' columns).

    On resume it keeps only the rows up to the checkpoint's epoch; rows written before a column existed keep an
    empty cell there (read back as None), so a run resumes with more measures than it started with."""

    def __init__(self, path: Path, fields: tuple[str, ...], resume_epoch: int = 0):
        self.path, self.fields = path, tuple(fields)
        self.rows = read_metrics(path) if resume_epoch and path.exists() else []
        self.rows = [{k: r.get(k) for k in self.fields} for r in self.rows if r["epoch"] <= resume_epoch]
        atomic_write(path, lambda fh: fh.write(self._render(self.rows, header=True).encode()))
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)

    def _render(self, rows: list[dict], header: bool) -> str:
        lines = [",".join(self.fields)] if header else []
        lines += [",".join(_fmt(r.get(k)) for k in self.fields) for r in rows]
        return "".join(line + "\n" for line in lines)

    def append(self, row: dict) -> None:
        """One row, whole or not at all: a write the disk cannot take is cut back off, so the file never ends in
        half a row."""
        data = self._render([row], header=False).encode()
        size = os.fstat(self._fd).st_size
        try:
            while data:
                data = data[os.write(self._fd, data) :]
        except OSError as exc:
            os.ftruncate(self._fd, size)
            if exc.errno in NO_SPACE:
                raise StorageError(exc.errno, f"no space left writing {self.path}: {exc.strerror}") from exc
            raise
        self.rows.append(row)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _fmt(v) -> str:
    if v is None:
        return ""
    return str(v) if isinstance(v, int) else f"{v:.6g}"


def read_metrics(path: Path) -> list[dict]:
    """metrics.csv as a list of dicts over its header's columns (epoch int, the rest float; an empty cell, a
    measure not computed at that evaluation, is None). A last line without its newline was torn by a kill during
    an append and is dropped; any other line that is not a row is damage and raises ValueError naming it."""
    text = Path(path).read_text()
    torn = bool(text) and not text.endswith("\n")
    records = list(csv.DictReader(io.StringIO(text.rsplit("\n", 1)[0] + "\n" if torn else text)))
    rows = []
    for n, r in enumerate(records):
        try:
            if None in r or None in r.values():
                raise ValueError("wrong number of fields")
            rows.append({k: int(v) if k == "epoch" else (None if v == "" else float(v)) for k, v in r.items()})
        except ValueError as exc:
            raise ValueError(f"{path}: line {n + 2} is not a metrics row ({exc})") from None
    return rows


def write_summary(path: Path, summary: dict) -> None:
    atomic_write(path, lambda fh: fh.write((json.dumps(summary, indent=2) + "\n").encode()))


def flat_crossings(cell: dict) -> dict:
    """A cell with its measures' threshold crossings as columns: crossed_<column>, lead_<column> (before the grok)."""
    out = dict(cell)
    for key, prefix in (("crossed", "crossed_"), ("hidden_progress", "lead_")):
        if isinstance(cell.get(key), dict):
            out.update({prefix + k: v for k, v in cell[key].items()})
    return out
