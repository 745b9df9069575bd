"""`logger=none`: no experiment tracker; metrics.csv, summary.json, the sweep's tables and the results database only."""

from __future__ import annotations

from grokpipe.loggers import Logger
from grokpipe.schema import Choice


class NoLogger(Logger):
    name = "none"
    SCHEMA = {**Logger.SCHEMA, "name": Choice(("none",))}
