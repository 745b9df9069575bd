"""grokpipe entry point: `python launch.py [overrides]`, or `-m` for a sweep."""

import sys

import hydra
from omegaconf import DictConfig

from grokpipe.job import main as run_job
from grokpipe.sweep_summary import exit_status


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    return run_job(cfg)


if __name__ == "__main__":
    main()
    sys.exit(exit_status())
