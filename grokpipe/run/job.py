"""What launch.py runs for each Hydra job: validate, train in the job's output dir, print the summary.

In a sweep a failing cell is recorded (summary.json status `failed`) and the other cells go on;
the sweep summary then ends the command with exit status 1 if any cell failed.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from grokpipe.core.cells import FAILED, PACKS, read_pack
from grokpipe.core.errors import ConfigError
from grokpipe.core.outputs import StorageError, write_summary


def main(cfg: DictConfig) -> float | None:
    """Returns the grok epoch (None if the run did not grok), the value a sweep optimiser would read."""
    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # its INFO lines (a font cache built) are not ours
    hydra_cfg = HydraConfig.get()
    in_sweep = hydra_cfg.mode == RunMode.MULTIRUN
    run_dir = Path(hydra_cfg.runtime.output_dir)
    if in_sweep and cfg.get("pack") is not None:  # a packed sweep's job: the cells of pack k, as one model
        return run_pack(Path(hydra_cfg.sweep.dir), int(cfg.pack))
    return run_one(cfg, run_dir, str(hydra_cfg.sweep.dir) if in_sweep else None)


def run_one(cfg: DictConfig, run_dir: Path, sweep_dir: str | None) -> float | None:
    """One run in `run_dir`, its config checked and resolved once where it trains (grokpipe.config.validate.prepare,
    called by the loop). Alone, bad input or a full disk ends the process with one line (exit status 2 or 3); in a
    sweep (`sweep_dir`) the cell records its failure and the sweep goes on. Returns the grok epoch."""
    from grokpipe.run.train import run  # imports torch

    in_sweep = sweep_dir is not None
    try:
        summary = run(cfg, run_dir, sweep_dir)
    except (ConfigError, StorageError) as exc:  # expected faults: one line, nothing computed is lost
        message = exc.strerror if isinstance(exc, StorageError) else str(exc)
        print(f"error: {message}", file=sys.stderr)
        if not in_sweep:
            sys.exit(3 if isinstance(exc, StorageError) else 2)
        _record_failure(run_dir, cfg, message)
        return None
    except Exception as exc:
        if not in_sweep:
            raise
        traceback.print_exc()
        _record_failure(run_dir, cfg, f"{type(exc).__name__}: {exc}")
        return None
    if cfg.train.get("print_summary"):
        print(json.dumps(summary, indent=2), flush=True)
    else:
        from grokpipe.run.report import describe

        print(describe(summary, run_dir), flush=True)
    return summary.get("grok_epoch")


def run_pack(sweep_dir: Path, k: int) -> list:
    """Train pack k of a packed sweep (its cells' configs were written to their dirs by the sweeper).
    A pack that raises is trained again cell by cell, each resuming from its own checkpoint alone, so a fault of one
    cell (its files, its dir) fails that cell only; a cell that fails alone records its error. Returns the cells'
    grok epochs."""
    from grokpipe.run.train import train

    plan = read_pack(sweep_dir, k)
    if plan is None:
        raise FileNotFoundError(f"{sweep_dir / PACKS} holds no pack {k}")
    dirs = [Path(d) for d in plan["dirs"]]
    cfgs = [OmegaConf.load(d / ".hydra" / "config.yaml") for d in dirs]
    print(f"pack {k}: cells {', '.join(map(str, plan['cells']))}", flush=True)
    if len(dirs) > 1:
        try:
            return [s.get("grok_epoch") for s in train(cfgs, dirs, str(sweep_dir))]
        except Exception as exc:  # noqa: BLE001 - whatever it was, each cell alone says whether it was its own
            what = exc.strerror if isinstance(exc, StorageError) else (str(exc).splitlines() or [""])[0]
            print(f"pack {k} stopped ({type(exc).__name__}: {what}); its cells go on one by one", flush=True)
    epochs = []
    for run_dir, cfg in zip(dirs, cfgs):
        try:
            (summary,) = train([cfg], [run_dir], str(sweep_dir))
            epochs.append(summary.get("grok_epoch"))
            continue
        except (ConfigError, StorageError) as exc:
            message = exc.strerror if isinstance(exc, StorageError) else str(exc)
            print(f"error: {run_dir}: {message}", file=sys.stderr)
        except Exception as exc:  # noqa: BLE001 - an unexpected error keeps its traceback in the job's log
            traceback.print_exc()
            message = f"{type(exc).__name__}: {exc}"
        _record_failure(run_dir, cfg, message)
        epochs.append(None)
    return epochs


def _record_failure(run_dir: Path, cfg: DictConfig, error: str) -> None:
    """summary.json of a failed cell: the error and the cell's coordinates, so the sweep summary can place it."""
    from grokpipe.config.validate import task_size

    summary = {"status": FAILED, "error": error}
    try:
        ratio = cfg.model.d_model / task_size(cfg)
        summary.update(
            ratio=ratio, wd=cfg.optim.wd, seed=cfg.train.seed, d_model=cfg.model.d_model, p=cfg.task.get("p")
        )
    except Exception:  # a config too broken to place: the error alone
        pass
    try:
        write_summary(run_dir / "summary.json", summary)
    except OSError:  # a full disk: the sweep summary reports the cell as missing instead
        pass
