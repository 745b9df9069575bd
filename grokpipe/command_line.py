"""Checks of the command line before Hydra runs anything: `model=foo` is one line listing the options there are,
and an override Hydra cannot apply (an unknown key, a bad value for the grammar) is one line, both with exit status
2 (Hydra's own report is a dozen lines and exit status 1). A sweep's cells are composed and checked by the sweeper."""

from __future__ import annotations

import re
from pathlib import Path

from grokpipe.errors import fail

CHOICE = re.compile(r"^[+~]?(?P<group>[a-z_]+)=(?P<value>.*)$")


def group_options(conf_dir: Path, group: str) -> list[str]:
    return sorted(p.stem for p in (conf_dir / group).glob("*.yaml"))


def check_group_choices(args: list[str], conf_dir: Path) -> None:
    """Every `group=option` (and each option of a list or a comma sweep) names a YAML in conf/<group>/."""
    for arg in args:
        match = CHOICE.match(arg)
        if not match or not (conf_dir / match["group"]).is_dir():
            continue
        group, value = match["group"], match["value"].strip()
        if value in ("", "null") or "(" in value or "$" in value:  # null, Hydra's sweep functions, interpolations
            continue
        options = group_options(conf_dir, group)
        for choice in value.strip("[]").split(","):
            choice = choice.strip().strip("'\"")
            if choice and choice != "..." and choice not in options:
                fail(f"{group}={choice} is not allowed: one of {', '.join(options)} (conf/{group}/)")


def check_composes(args: list[str], conf_dir: Path) -> None:
    """A single run's overrides compose (a sweep's are composed cell by cell by the sweeper)."""
    if any(a.startswith("-") for a in args):  # -m, --cfg, --help, ...: Hydra's own modes
        return
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    overrides = [a for a in args if not a.lstrip("+~").startswith("hydra")]
    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
            compose(config_name="config", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as exc:
        fail(one_line(exc))


def one_line(exc: Exception) -> str:
    """Hydra's multi-line message as one line, naming the key where Hydra names one."""
    text = str(exc)
    if match := re.match(r"Could not override '([^']+)'", text):
        key = match[1]
        return f"{key} is not allowed: the config has no such key (see `python launch.py --cfg job`)"
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def check_command_line(args: list[str], conf_dir: Path) -> None:
    check_group_choices(args, conf_dir)
    check_composes(args, conf_dir)
