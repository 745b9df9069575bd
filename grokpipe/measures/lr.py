"""The learning rate of each member's next step (after warm-up): lr."""

from __future__ import annotations

from grokpipe.measures import Evaluation, Measure


class LearningRate(Measure):
    columns = ("lr",)

    def __call__(self, ev: Evaluation) -> dict:
        return {"lr": ev.optimizer.lr()[:, 0]}
