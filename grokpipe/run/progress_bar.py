"""The console progress bar: a live bar on a terminal, plain periodic lines otherwise (SLURM logs, pipes)."""

from __future__ import annotations

import sys
import time


class ProgressBar:
    """`metric`: the task's metric shown beside the loss (acc, mae); `count`: what the loop counts (epoch, step)."""

    def __init__(self, total: int, start: int, print_every: int, desc: str, metric: str = "acc", count: str = "epoch"):
        self.total, self.print_every, self.desc = total, print_every, desc
        self.metric, self.count = metric, count
        self.bar = None
        if sys.stdout.isatty():
            from tqdm import tqdm

            unit = "ep" if count == "epoch" else count
            self.bar = tqdm(total=total, initial=start, desc=desc, unit=unit, dynamic_ncols=True)
        self.epoch, self.t0 = start, time.time()

    def update(self, row: dict) -> None:
        epoch, m = int(row["epoch"]), self.metric
        if self.bar is not None:
            self.bar.update(epoch - self.epoch)
            self.bar.set_postfix(train=f"{row[f'train_{m}']:.3f}", val=f"{row[f'val_{m}']:.3f}", refresh=False)
        elif self.print_every and epoch // self.print_every != self.epoch // self.print_every:
            print(
                f"{self.desc} {self.count} {epoch}/{self.total}  train_loss {row['train_loss']:.4f} "
                f"train_{m} {row[f'train_{m}']:.3f}  val_loss {row['val_loss']:.4f} val_{m} {row[f'val_{m}']:.3f}  "
                f"{time.time() - self.t0:.0f}s",
                flush=True,
            )
        self.epoch = epoch

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
