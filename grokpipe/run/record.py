"""One run's record, the same for a single run and for each member of a pack: identity and resume, what a
checkpoint holds, the per-evaluation row, and the end of a run (summary.json, last checkpoint, figures, W&B)."""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

import grokpipe.core.checkpoint as checkpoint
import grokpipe.core.split as split
import grokpipe.run.provenance as provenance
from grokpipe.config.validate import budget
from grokpipe.core.checkpoint import Checkpoint, load_at, load_latest, rng_state
from grokpipe.core.checkpoint import save as save_checkpoint
from grokpipe.core.errors import ConfigError
from grokpipe.core.outputs import MetricsLog, check_storage, write_summary
from grokpipe.loggers import build_logger

FINISHED = ("grokked", "completed", "diverged")
IDENTITY_TRAIN_KEYS = ("seed", "batch_size", "precision", "eval_every")
# optimiser options whose "off" leaves a run as it was before they existed: a checkpoint from then still resumes
OPTIONS_OFF = {"orthogonal": False, "constant_norm": {"enabled": False}}


def identity(cfg: DictConfig) -> dict:
    """What makes two configs the same run: a checkpoint of another identity is never resumed.
    Measures are not part of it: a run resumes with more (or fewer) measures than it started with. The budget is
    not either (a run goes on to a larger one), but its unit is: a run in steps is not one in epochs."""
    keep = {k: cfg.train[k] for k in IDENTITY_TRAIN_KEYS}
    if budget(cfg.train)[1] == "steps":  # a run in epochs keeps the identity it had before steps existed
        keep["unit"] = "steps"
    groups = {"model": cfg.model, "task": cfg.task, "loss": cfg.loss, "optim": cfg.optim, "train": keep}
    plain = OmegaConf.to_container(OmegaConf.create(groups), resolve=True)
    optim = plain["optim"]
    for key, off in OPTIONS_OFF.items():  # an option left off is the run it was before the option existed
        if optim.get(key) == off or (isinstance(off, dict) and not (optim.get(key) or {}).get("enabled", False)):
            optim.pop(key, None)
    return plain


MISSING_KEY = "<absent>"


def config_differences(theirs: dict, mine: dict, prefix: str = "") -> list[tuple[str, object, object]]:
    """(dotted key, their value, my value) for every leaf where two identities differ, in key order."""
    out = []
    for key in sorted(set(theirs) | set(mine)):
        a, b = theirs.get(key, MISSING_KEY), mine.get(key, MISSING_KEY)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append((f"{prefix}{key}", a, b))
    return out


def _shown(value) -> str:
    return "absent" if value is MISSING_KEY else repr(value)


def run_name(cfg: DictConfig, task) -> str:
    return f"{cfg.model.name}-d{cfg.model.d_model}-{task.name}-wd{cfg.optim.wd:g}-s{cfg.train.seed}"


def read_summary(run_dir: Path) -> dict:
    path = Path(run_dir) / "summary.json"
    return json.loads(path.read_text()) if path.exists() else {"status": "unknown", "run_dir": str(run_dir)}


class RunRecord:
    def __init__(self, cfg: DictConfig, run_dir: Path, task) -> None:
        self.cfg, self.run_dir, self.task = cfg, Path(run_dir), task
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.ckpt_dir = self.run_dir / checkpoint.DIR
        self.name = run_name(cfg, task)
        self.ratio = cfg.model.d_model / task.size
        self.metrics: MetricsLog | None = None
        self.provenance: dict | None = None
        self.logger = None
        self.prior_seconds = 0.0
        self.status, self.saved_epoch, self.summary = "running", 0, None

    # ---------------------------------------------------------------- resume
    def load(self, device) -> dict | None:
        """The newest readable checkpoint of this run (None: start fresh). Refuses a checkpoint of another config."""
        ckpt = load_latest(self.ckpt_dir, map_location=device)
        if ckpt is None:
            return None
        mine = identity(self.cfg)
        if ckpt.config != mine:
            differ = config_differences(ckpt.config or {}, mine)
            shown = "; ".join(f"{k}: {_shown(a)} there, {_shown(b)} here" for k, a, b in differ[:3])
            more = f" (and {len(differ) - 3} more)" if len(differ) > 3 else ""
            raise ConfigError(
                f"{self.run_dir} holds a run of another config ({shown}{more}); launch into a new dir or remove it"
            )
        if not isinstance(ckpt.optimizer, dict) or "steps" not in ckpt.optimizer:
            raise ConfigError(f"{self.run_dir} holds a checkpoint of an older grokpipe; launch into a new dir")
        self.prior_seconds, self.saved_epoch = ckpt.elapsed, ckpt.epoch
        return ckpt

    def load_at(self, epoch: int, device) -> Checkpoint | None:
        return load_at(self.ckpt_dir, epoch, map_location=device)

    @staticmethod
    def finished(ckpt: Checkpoint | None, last: int) -> bool:
        """A checkpoint that ended its run: grokked or diverged, or completed at this budget (`last`, its unit's)."""
        if ckpt is None or ckpt.status not in FINISHED:
            return False
        return ckpt.status != "completed" or ckpt.epoch >= last

    def open(self, start_epoch: int, fields: tuple[str, ...], param_bytes: int, device, concurrent: bool) -> None:
        """Check the storage, write the provenance, open metrics.csv (keeping the rows up to `start_epoch`) and the
        W&B run (its config holds the provenance too)."""
        tc, (last, _) = self.cfg.train, budget(self.cfg.train)
        n_checkpoints = 2 + (last // tc.checkpoint_every if tc.checkpoint_every else 0)
        need = 4 * param_bytes * n_checkpoints + 100 * last // tc.eval_every + 2**20
        check_storage(self.run_dir, need_bytes=need)
        self.provenance = provenance.record(self.run_dir, device, tc.precision, start_epoch)
        self.metrics = MetricsLog(self.run_dir / "metrics.csv", fields, resume_epoch=start_epoch)
        resolved = OmegaConf.to_container(self.cfg, resolve=True)
        resolved["ratio"] = self.ratio
        resolved["provenance"] = self.provenance
        self.logger = build_logger(self.cfg.logger).start(resolved, self.run_dir, self.name, concurrent=concurrent)

    # ---------------------------------------------------------------- during the run
    def record(self, row: dict) -> None:
        """One evaluation's row: metrics.csv, then W&B at the same step."""
        self.metrics.append(row)
        if self.logger is not None:
            self.logger.log(row)

    def checkpoint(self, kind: str, epoch: int, model: dict, optimizer: dict, shuffle, elapsed: float) -> None:
        """What a checkpoint holds: the model's state_dict, the optimiser's state for this run, the shuffle and
        global RNG states, the epoch, elapsed seconds, status and the config's identity. `kind`: last or kept."""
        state = Checkpoint(
            model=model, optimizer=optimizer, shuffle=shuffle, rng=rng_state(), epoch=epoch, elapsed=elapsed,
            status=self.status, config=identity(self.cfg),
        )  # fmt: skip
        save_checkpoint(self.ckpt_dir, kind, state)
        if kind == "last":
            self.saved_epoch = epoch

    # ---------------------------------------------------------------- the end
    def summarize(self, outcome: dict, epoch: int, wall_seconds: float, n_params: int, device) -> dict:
        """summary.json: the outcome, the final metrics and the key hyperparameters (the contract analysis reads)."""
        rows = self.metrics.rows if self.metrics is not None else []
        final = rows[-1] if rows else {}
        cfg, tc = self.cfg, self.cfg.train
        summary = {
            "status": self.status,
            "grokked": outcome["grok_epoch"] is not None,
            "grok_epoch": outcome["grok_epoch"],
            "memorized_epoch": outcome["memorized_epoch"],
        }
        crossed, grok = outcome.get("crossed") or {}, outcome["grok_epoch"]
        if crossed:  # the first epoch each measure crossed its threshold, and how long before the grok that was
            summary["crossed"] = crossed
            summary["hidden_progress"] = {
                k: (grok - e if grok is not None and e is not None else None) for k, e in crossed.items()
            }
        summary.update({f"final_{k}": v for k, v in final.items() if k not in ("epoch", "elapsed")})
        summary.update(
            {
                "unit": budget(tc)[1],  # what every epoch-named field counts: epochs, or optimizer steps
                "epochs_run": epoch,
                "wall_seconds": round(wall_seconds, 3),
                "ratio": self.ratio,
                "criterion": self.task.criterion_text(),
                "model": cfg.model.name,
                "d_model": cfg.model.d_model,
                "task": cfg.task.name,
                "task_size": self.task.size,
                "op": cfg.task.get("op", cfg.task.name),
                "p": cfg.task.get("p"),
                "train_frac": cfg.task.train_frac,
                "split_seed": cfg.task.split_seed,
                "split": split.of_config(cfg.task),  # seed: the split follows the seed; fixed: one split
                "loss": cfg.loss.name,
                "optimizer": cfg.optim.name,
                "lr": cfg.optim.lr,
                "wd": cfg.optim.wd,
                "grokfast": bool(cfg.optim.grokfast.enabled),
                "seed": tc.seed,
                "precision": tc.precision,
                "max_epochs": tc.max_epochs,
                "max_steps": tc.get("max_steps"),
                "batch_size": tc.batch_size,
                "n_params": n_params,
                "device": str(device),
                "run_dir": str(self.run_dir),
                "provenance": self.provenance,
            }
        )
        return summary

    def finish(self, outcome: dict, epoch: int, wall: float, n_params: int, device, save_last) -> dict:
        """The end of a run: summary.json first (a finished checkpoint without its summary would never be trained
        again), then last.pt (`save_last()`), the run figure (its finite points), and the W&B run."""
        if self.metrics is not None:
            self.metrics.close()
        self.summary = self.summarize(outcome, epoch, wall, n_params, device)
        write_summary(self.run_dir / "summary.json", self.summary)
        save_last()
        rows = self.metrics.rows if self.metrics is not None else []
        if self.cfg.train.plot and rows:
            from grokpipe.run.figures import plot_curves, thresholds_of

            title = self.name + (" (diverged: its finite part)" if self.status == "diverged" else "")
            plot_curves(
                rows,
                self.run_dir / "curves.png",
                title,
                outcome["grok_epoch"],
                outcome["memorized_epoch"],
                outcome.get("crossed"),
                budget(self.cfg.train)[1][:-1],
                thresholds_of(OmegaConf.to_container(self.cfg.get("measures"), resolve=True)),
            )
        if self.logger is not None:
            self.logger.finish(self.summary, exit_code=int(self.status == "interrupted"))
            self.logger = None
        return self.summary

    def abandon(self) -> None:
        """A run whose process fails: close its W&B run so none is left open."""
        if self.logger is not None:
            self.logger.finish({"status": "failed"}, exit_code=1)
            self.logger = None
