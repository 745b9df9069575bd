"""The training loss on train and val: train_loss, val_loss."""

from __future__ import annotations

from grokpipe.measures import SPLITS, Evaluation, Measure


class LossMeasure(Measure):
    columns = tuple(f"{s}_loss" for s in SPLITS)

    def __call__(self, ev: Evaluation) -> dict:
        return {f"{s}_loss": ev.loss(ev.outputs[s], ev.targets[s]) for s in SPLITS}
