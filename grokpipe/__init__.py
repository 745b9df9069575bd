"""grokpipe: where small networks stop memorising modular arithmetic and generalise."""

from grokpipe.core import __version__

__all__ = ["__version__", "load"]


def load(path):
    """A run dir, a sweep dir or a results database as pandas DataFrames (`.cells`, `.metrics`).

    See grokpipe.results.frames."""
    from grokpipe.results.frames import load as load_frames  # pandas only when asked for

    return load_frames(path)
