"""`logger=none`: no experiment tracker; metrics.csv, summary.json, the sweep's tables and the results database only."""

from __future__ import annotations

from grokpipe.core.schema import Choice
from grokpipe.loggers import Logger


class NoLogger(Logger):
    name = "none"
    SCHEMA = {**Logger.SCHEMA, "name": Choice(("none",))}
