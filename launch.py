"""grokpipe entry point: `python launch.py [overrides]`, or `-m` for a sweep (exit status 1 if any cell failed)."""

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from grokpipe.config.command_line import check_command_line

CONF = Path(__file__).resolve().parent / "conf"


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from grokpipe.run.job import main as run_job  # imports torch: when a job runs, not for --help or --cfg

    return run_job(cfg)


if __name__ == "__main__":
    check_command_line(sys.argv[1:], CONF)
    main()
