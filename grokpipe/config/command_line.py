"""Checks of the command line before Hydra runs anything: `model=foo` is one line listing the options there are,
and an override Hydra cannot apply (an unknown key, a bad value for the grammar) is one line, both with exit status
2 (Hydra's own report is a dozen lines and exit status 1). A sweep's cells are composed and checked by the sweeper."""

from __future__ import annotations

import re
from pathlib import Path

from grokpipe.core.errors import fail

CHOICE = re.compile(r"^[+~]?(?P<group>[a-z_]+)=(?P<value>.*)$")


def group_options(conf_dir: Path, group: str) -> list[str]:
    return sorted(p.stem for p in (conf_dir / group).glob("*.yaml"))


def group_defaults(conf_dir: Path) -> dict:
    """Each group's entry in the primary config's defaults list: an option, a list of options (measures), or null."""
    from omegaconf import OmegaConf

    defaults = OmegaConf.to_container(OmegaConf.load(conf_dir / "config.yaml")).get("defaults", [])
    return {k: v for d in defaults if isinstance(d, dict) for k, v in d.items() if not k.startswith("override ")}


def check_group_choices(args: list[str], conf_dir: Path) -> None:
    """Every `group=option` (and each option of a list or a comma sweep) names a YAML in conf/<group>/ (null fails
    in Hydra with a traceback: `~group` leaves an optional group out); a list only where the default is a list."""
    for arg in args:
        match = CHOICE.match(arg)
        if not match or not (conf_dir / match["group"]).is_dir():
            continue
        group, value = match["group"], match["value"].strip()
        if value == "" or "(" in value or "$" in value:  # Hydra's sweep functions, interpolations
            continue
        options = group_options(conf_dir, group)
        # a list where one option goes: Hydra would merge the options, the last one winning
        if value.startswith("[") and not isinstance(group_defaults(conf_dir).get(group), list):
            fail(f"{group}={value} is not allowed: a single option, one of {', '.join(options)} (conf/{group}/)")
        for choice in value.split(","):
            choice = choice.strip().strip("[]").strip("'\"")
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
    text, cause = str(exc), str(exc.__cause__ or "")
    full_key = re.search(r"full_key: (\S+)", cause)
    if match := re.match(r"Could not override '([^']+)'", text):
        key = full_key[1] if full_key else match[1]  # a mapping's value may bring the key that is not there
        return f"{key} is not allowed: the config has no such key (see `python launch.py --cfg job`)"
    merging, kind = re.match(r"Error merging override ([^=]+)=(.*)", text), re.search(r"object_type=(\w+)", cause)
    if merging and kind:  # a list where a mapping goes, or the other way round
        return f"{merging[1]}={merging[2]} is not allowed: must be a {'mapping' if kind[1] == 'dict' else 'list'} here"
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


SWEEPER_KEY = re.compile(r"^[+~]*hydra\.sweeper\.(?P<key>\w+)")


def check_sweeper_keys(args: list[str], conf_dir: Path) -> None:
    """Every `hydra.sweeper.<key>=...` names a key of the chosen sweeper (conf/hydra/sweeper/<choice>.yaml lists
    them all); Hydra's report of an unknown one is several lines."""
    from omegaconf import OmegaConf

    choice = next((a.split("=", 1)[1] for a in args if a.startswith("hydra/sweeper=")), None)
    if choice is None:
        defaults = OmegaConf.to_container(OmegaConf.load(conf_dir / "config.yaml")).get("defaults", [])
        choice = next((v for d in defaults if isinstance(d, dict) for k, v in d.items() if k.endswith("hydra/sweeper")),
                      None)  # fmt: skip
    path = conf_dir / "hydra" / "sweeper" / f"{choice}.yaml"
    if choice is None or not path.is_file():
        return
    keys = sorted(k for k in OmegaConf.to_container(OmegaConf.load(path)) if k not in ("defaults", "_target_"))
    for arg in args:
        if (match := SWEEPER_KEY.match(arg)) and match["key"] not in keys:
            fail(f"hydra.sweeper.{match['key']} is not a setting of hydra/sweeper={choice}: one of {', '.join(keys)}")


def check_command_line(args: list[str], conf_dir: Path) -> None:
    check_group_choices(args, conf_dir)
    check_sweeper_keys(args, conf_dir)
    check_composes(args, conf_dir)
