"""Weights & Biases for one run: offline when no credentials, never a prompt, never a crash.

W&B is a mirror of the local files: any failure (no key, helper killed by SLURM's SIGTERM, full disk)
is reported once and logging stops, while training and metrics.csv go on. W&B's own error reporting follows
`logger.error_reporting` (off) unless WANDB_ERROR_REPORTING is set: on, it probes the server again at exit, 10 s
more when the server does not answer, and `logger.init_timeout` is meant to bound the whole wait.
"""

from __future__ import annotations

import netrc
import os
import secrets
import sys
from contextlib import contextmanager, suppress
from pathlib import Path
from urllib.parse import urlparse

from grokpipe.core.cells import run_group
from grokpipe.core.secrets import mask_args, scrub


def has_credentials() -> bool:
    """An API key in the environment or in ~/.netrc for the W&B host (what `wandb login` writes)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def choose_mode(mode: str) -> str:
    """`auto` goes online only with credentials; WANDB_MODE in the environment wins over the config."""
    env = os.environ.get("WANDB_MODE")
    if env:
        return env
    if mode == "auto":
        return "online" if has_credentials() else "offline"
    return mode


@contextmanager
def masked_argv():
    """W&B records the command line; `key=value` arguments whose key names a secret go in as `key=***`."""
    saved = sys.argv
    sys.argv = mask_args(saved)
    try:
        yield
    finally:
        sys.argv = saved


def _helper_gone(exc: BaseException) -> bool:
    """Whether a failed call means W&B's helper process is gone (killed, or its socket closed)."""
    from wandb.sdk.mailbox import HandleAbandonedError

    return isinstance(exc, (ConnectionError, HandleAbandonedError))


def _release_helper() -> None:
    """Drop the connection to a dead helper: W&B's exit hook then prints no traceback, and a later run in this
    process (the next cell of a sweep) starts a new helper. Tearing down a dead helper raises; nothing to do."""
    import wandb

    with suppress(Exception):
        wandb.teardown()


class WandbRun:
    """One W&B run bound to a run dir; its id is kept in `wandb_id.txt` so a resumed run continues it."""

    def __init__(self, cfg: dict, run_dir: Path, name: str, concurrent: bool = False):
        """`concurrent`: one of several live runs in this process (a pack's members); else it ends the previous."""
        self.run = None
        lc = cfg["logger"]
        # the environment wins, as for every W&B setting; off, a dead server is not probed again at exit
        os.environ.setdefault("WANDB_ERROR_REPORTING", str(bool(lc.get("error_reporting", False))).lower())
        try:
            import wandb

            id_file = run_dir / "wandb_id.txt"
            run_id = id_file.read_text().strip() if id_file.exists() else secrets.token_hex(6)
            id_file.write_text(run_id + "\n")
            with masked_argv():
                self.run = wandb.init(
                    project=lc["project"],
                    entity=lc.get("entity"),
                    group=lc.get("group") or run_group(cfg["task"]),
                    job_type=lc.get("job_type"),
                    tags=list(lc.get("tags") or []),
                    name=name,
                    id=run_id,
                    resume="allow",
                    dir=str(run_dir),
                    mode=choose_mode(lc.get("mode", "auto")),
                    config=scrub(cfg),
                    reinit="create_new" if concurrent else "finish_previous",
                    # flush the run file every 2 s (default 15): preemption's SIGTERM also kills W&B's helper,
                    # and what it had not flushed is lost to W&B (metrics.csv keeps every row)
                    settings=wandb.Settings(
                        silent=True,
                        console="off",
                        x_disable_stats=True,
                        init_timeout=lc["init_timeout"],
                        x_transaction_log_flush_interval=2.0,
                    ),
                )
        except Exception as exc:  # W&B is optional: say why once, keep training
            self._degrade("start", exc)

    def _degrade(self, what: str, exc: BaseException) -> None:
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        print(f"warning: W&B {what} failed ({reason}); continuing with local files only", file=sys.stderr)
        self.run = None
        if what != "start" and _helper_gone(exc):
            _release_helper()

    def log(self, row: dict) -> None:
        if self.run is None:
            return
        try:
            self.run.log(row, step=int(row["epoch"]))
        except Exception as exc:
            self._degrade("log", exc)

    def finish(self, summary: dict, exit_code: int = 0) -> None:
        if self.run is None:
            return
        try:
            self.run.summary.update(summary)
            self.run.finish(exit_code=exit_code)
        except Exception as exc:
            self._degrade("finish", exc)
        self.run = None

    @property
    def dir(self) -> str | None:
        return None if self.run is None else self.run.dir
