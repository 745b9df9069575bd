"""The console progress bar: a live bar on a terminal, plain periodic lines otherwise (SLURM logs, pipes)."""

from __future__ import annotations

import sys
import time


class ProgressBar:
    def __init__(self, total: int, start: int, print_every: int, desc: str):
        self.total, self.print_every, self.desc = total, print_every, desc
        self.bar = None
        if sys.stdout.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, desc=desc, unit="ep", dynamic_ncols=True)
        self.epoch, self.t0 = start, time.time()

    def update(self, row: dict) -> None:
        epoch = int(row["epoch"])
        if self.bar is not None:
            self.bar.update(epoch - self.epoch)
            self.bar.set_postfix(train=f"{row['train_acc']:.3f}", val=f"{row['val_acc']:.3f}", refresh=False)
        elif self.print_every and epoch // self.print_every != self.epoch // self.print_every:
            print(
                f"{self.desc} epoch {epoch}/{self.total}  train_loss {row['train_loss']:.4f} "
                f"train_acc {row['train_acc']:.3f}  val_loss {row['val_loss']:.4f} val_acc {row['val_acc']:.3f}  "
                f"{time.time() - self.t0:.0f}s",
                flush=True,
            )
        self.epoch = epoch

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
