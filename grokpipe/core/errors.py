"""The errors grokpipe shows a user: one line naming what is wrong, and the exit status that goes with it."""

from __future__ import annotations

import sys
from typing import NoReturn


class ConfigError(ValueError):
    """A config value grokpipe refuses; str() is the one line shown to the user."""


def fail(message: str) -> NoReturn:
    """The one-line error every grokpipe command gives for bad input, with exit status 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)
