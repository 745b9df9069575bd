"""The task's own metrics on train and val (accuracy for the classification tasks: train_acc, val_acc)."""

from __future__ import annotations

from grokpipe.measures import SPLITS, Evaluation, Measure


class TaskMetrics(Measure):
    def __init__(self, task, **kwargs) -> None:
        super().__init__(task, **kwargs)
        names = list(task.metric_names)
        self.columns = tuple(f"{s}_{n}" for s in SPLITS for n in names)

    def __call__(self, ev: Evaluation) -> dict:
        out = {}
        for s in SPLITS:
            out.update({f"{s}_{k}": v for k, v in ev.task.metrics(ev.outputs[s], ev.targets[s]).items()})
        return out
