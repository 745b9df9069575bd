"""What launch.py runs for each Hydra job: validate, train in the job's output dir, print the summary."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from grokpipe.validate import ConfigError, validate


def main(cfg: DictConfig) -> float | None:
    """Returns the grok epoch (None if the run did not grok), the value a sweep optimiser would read."""
    try:
        validate(cfg)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    from grokpipe.train import run

    summary = run(cfg, Path(HydraConfig.get().runtime.output_dir))
    print(json.dumps(summary, indent=2), flush=True)
    return summary["grok_epoch"]
