"""`logger=wandb`: every run a W&B run (offline without credentials: grokpipe.loggers.wandb_run), a sweep's end a run of
job_type `sweep-summary` in the sweep's group holding its tables and figures."""

from __future__ import annotations

import json
from pathlib import Path

from grokpipe.core.schema import Anything, Bool, Choice, Float, Nullable, Str
from grokpipe.loggers import Logger, RunLog


def _cell(value):
    """A W&B table cell: a list (betas) as its text, since a column holds one type."""
    return json.dumps(value) if isinstance(value, (list, dict)) else value


class Wandb(Logger):
    name = "wandb"
    SCHEMA = {
        **Logger.SCHEMA,
        "name": Choice(("wandb",)),
        "project": Str(),
        "entity": Nullable(Str()),
        "mode": Choice(("auto", "online", "offline")),
        "init_timeout": Float(0, 3600, lo_open=True),
        "error_reporting": Bool(),
        "job_type": Nullable(Str()),
        "tags": Anything(),
    }

    def start(self, config: dict, run_dir: Path, name: str, concurrent: bool = False) -> RunLog | None:
        from grokpipe.loggers.wandb_run import WandbRun

        return WandbRun(config, run_dir, name, concurrent=concurrent)

    def sweep_summary(
        self, config: dict, sweep_dir: Path, group: str, tables: dict[str, tuple], images: dict[str, Path],
        totals: dict,
    ) -> None:  # fmt: skip
        from grokpipe.loggers.wandb_run import WandbRun

        logger = {**self.settings, "group": group, "job_type": "sweep-summary", "tags": ["sweep-summary"]}
        run = WandbRun({**config, "logger": logger}, sweep_dir, f"summary-{group}")
        if run.run is None:
            return
        import wandb

        media = {k: wandb.Table(columns=list(cols), data=[[_cell(v) for v in row] for row in rows])
                 for k, (cols, rows) in tables.items()}  # fmt: skip
        media |= {k: wandb.Image(str(path)) for k, path in images.items() if path.exists()}
        run.log({"epoch": 0, **media})
        run.finish(totals)
