"""Loggers: where a run's rows and a sweep's summary go besides the local files (metrics.csv, summary.json, the
sweep's tables), which are written whatever the logger. Each is one file here plus one YAML in conf/logger/ whose
`_target_` names its class; its SCHEMA declares its keys, checked with every other part's (grokpipe.config.validate).

A logger is built from its config node (`build_logger(cfg.logger)`) and asked for two things:
- `start(config, run_dir, name, concurrent)`: a run's log, with `log(row)` per evaluation and `finish(summary,
  exit_code)` at the end, or None where this logger keeps nothing per run;
- `sweep_summary(config, sweep_dir, group, tables, images, totals)`: a sweep's end (its tables, figures, counts).
A logger never fails a run: it reports a failure once and stops logging, as the W&B one does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from omegaconf import DictConfig, OmegaConf

from grokpipe.core.schema import Nullable, Str


class RunLog(Protocol):
    def log(self, row: dict) -> None: ...

    def finish(self, summary: dict, exit_code: int = 0) -> None: ...


class Logger:
    """Base of every logger: logs nothing. `name` is the option's own name (conf/logger/<name>.yaml)."""

    name = "none"
    SCHEMA = {
        "_target_": Str(),
        "name": Str(),
        "group": Nullable(Str()),  # the experiment's name: the W&B group, the results database's experiment
    }

    def __init__(self, **settings) -> None:
        self.settings = settings

    def start(self, config: dict, run_dir: Path, name: str, concurrent: bool = False) -> RunLog | None:
        """A run's log; `config` is the run's resolved config (with its ratio and provenance)."""
        return None

    def sweep_summary(
        self, config: dict, sweep_dir: Path, group: str, tables: dict[str, tuple], images: dict[str, Path],
        totals: dict,
    ) -> None:  # fmt: skip
        """A sweep's end: `tables` name -> (columns, rows of values), `images` name -> a figure's path."""


def build_logger(logger_cfg: DictConfig) -> Logger:
    """The logger a checked config's `logger` node names (grokpipe.config.validate refuses any other), its keys as
    settings."""
    import importlib

    target = logger_cfg.get("_target_")
    if target is None:  # a config from before the logger was a part names its option only: that option's class
        option = str(logger_cfg.get("name"))
        module = importlib.import_module(f"grokpipe.loggers.{option}")
        cls = next(c for c in vars(module).values() if isinstance(c, type) and issubclass(c, Logger) and
                   c is not Logger and c.name == option)  # fmt: skip
    else:
        module, _, name = str(target).rpartition(".")
        cls = getattr(importlib.import_module(module), name)
    settings = {k: v for k, v in OmegaConf.to_container(logger_cfg, resolve=True).items() if k != "_target_"}
    return cls(**settings)
