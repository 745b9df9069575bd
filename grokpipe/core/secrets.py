"""Secrets never leave the environment: keys that name one are dropped from configs and masked on command lines."""

from __future__ import annotations

import re

SECRET_KEY = re.compile(r"(api_?key|token|secret|password)", re.IGNORECASE)


def scrub(config: dict) -> dict:
    """Drop any key that names a secret, at any depth: keys never reach a run's config."""
    out = {}
    for k, v in config.items():
        if SECRET_KEY.search(str(k)):
            continue
        out[k] = scrub(v) if isinstance(v, dict) else v
    return out


def mask_args(args: list[str]) -> list[str]:
    """`key=value` arguments whose key names a secret become `key=***`."""
    return [f"{a.split('=', 1)[0]}=***" if "=" in a and SECRET_KEY.search(a.split("=", 1)[0]) else a for a in args]
