"""What every layer shares: errors, value types, the files runs and sweeps write, checkpoints, the split, secrets."""

__version__ = "0.1.0"  # pyproject.toml's version; provenance records it
