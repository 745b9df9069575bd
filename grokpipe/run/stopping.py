"""The stopping rule, as tensor ops over the members of a run (one member for a single run).

At each evaluation, per member: a non-finite train loss stops the run (`diverged`); `memorized_epoch` is the first
evaluation meeting the task's memorisation criterion; `grok_epoch` is the first of `window` consecutive evaluations
meeting its generalisation criterion (seed 003: val acc >= 0.95 for 10 evaluations); the run stops `patience`
epochs after `grok_epoch` (never when patience is null). The state lives on the device, so deciding needs no host
sync; on resume it is rebuilt by replaying the metrics rows already written through the same `update`.
"""

from __future__ import annotations

import math

import torch

NONE = -1  # "not yet" in the epoch tensors
NO_PATIENCE = 2**62


class StoppingRule:
    def __init__(self, task, window: int, patience: list[int | None], device: torch.device | str = "cpu") -> None:
        m = len(patience)
        self.task, self.window = task, window
        self.patience = torch.tensor([NO_PATIENCE if p is None else p for p in patience], device=device)
        long = dict(dtype=torch.long, device=device)
        self.streak = torch.zeros(m, **long)
        self.streak_start = torch.full((m,), NONE, **long)
        self.grok_epoch = torch.full((m,), NONE, **long)
        self.memorized_epoch = torch.full((m,), NONE, **long)
        self.stop_epoch = torch.full((m,), NONE, **long)  # the evaluation at which the member stopped
        self.diverged = torch.zeros(m, dtype=torch.bool, device=device)

    def update(self, epoch: int, row: dict[str, torch.Tensor]) -> torch.Tensor:
        """Take one evaluation (column -> [M]); returns [M] bool: the members still running after it."""
        running = self.stop_epoch < 0
        finite = torch.isfinite(row["train_loss"])
        mem = self.task.criterion(row, "memorize") & finite & running
        self.memorized_epoch = torch.where(mem & (self.memorized_epoch < 0), epoch, self.memorized_epoch)
        open_ = (self.grok_epoch < 0) & running
        hit = self.task.criterion(row, "generalize") & finite
        self.streak_start = torch.where(open_ & hit & (self.streak == 0), epoch, self.streak_start)
        self.streak = torch.where(open_, torch.where(hit, self.streak + 1, 0), self.streak)
        newly = open_ & (self.streak >= self.window)
        self.grok_epoch = torch.where(newly, self.streak_start, self.grok_epoch)
        patience_over = (self.grok_epoch >= 0) & (epoch >= self.grok_epoch + self.patience)
        self.diverged |= running & ~finite
        stop = running & (~finite | patience_over)
        self.stop_epoch = torch.where(stop, epoch, self.stop_epoch)
        return self.stop_epoch < 0

    def replay(self, i: int, rows: list[dict]) -> None:
        """Rebuild member i's state from the metrics rows it has written (a resumed run)."""
        one = StoppingRule(self.task, self.window, [int(self.patience[i].item())])
        for r in rows:
            one.update(r["epoch"], {k: torch.tensor([_num(v)]) for k, v in r.items() if k != "epoch"})
        for name in ("streak", "streak_start", "grok_epoch", "memorized_epoch", "stop_epoch", "diverged"):
            getattr(self, name)[i] = getattr(one, name)[0].to(getattr(self, name).device)

    def outcome(self, i: int) -> dict:
        """Member i's grok and memorisation epochs (None when not reached) and whether it diverged."""

        def epoch(t: torch.Tensor):
            v = int(t[i].item())
            return None if v < 0 else v

        return {
            "grok_epoch": epoch(self.grok_epoch),
            "memorized_epoch": epoch(self.memorized_epoch),
            "stop_epoch": epoch(self.stop_epoch),
            "diverged": bool(self.diverged[i].item()),
        }


def _num(v) -> float:
    return math.nan if v is None else float(v)
