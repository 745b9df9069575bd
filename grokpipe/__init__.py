"""grokpipe: where small networks stop memorising modular arithmetic and generalise."""

__version__ = "0.1.0"


def load(path):
    """A run dir, a sweep dir or a results database as pandas DataFrames (`.cells`, `.metrics`): grokpipe.frames."""
    from grokpipe.frames import load as load_frames  # pandas only when asked for

    return load_frames(path)
