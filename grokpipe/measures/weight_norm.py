"""The L2 norm of all of a member's parameters: weight_norm."""

from __future__ import annotations

from grokpipe.measures import Evaluation, Measure


class WeightNorm(Measure):
    columns = ("weight_norm",)

    def __call__(self, ev: Evaluation) -> dict:
        return {"weight_norm": ev.stack.flat.detach().float().pow(2).sum(1).sqrt()}
