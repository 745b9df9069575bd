"""grokpipe: where small networks stop memorising modular arithmetic and generalise."""

__version__ = "0.1.0"
