"""Grok detection as seed 003 defines it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class GrokDetector:
    """grok_epoch = first evaluation of a run of `window` consecutive ones with val acc >= `threshold`;
    memorized_epoch = first evaluation with train acc >= `memorize_threshold`."""

    threshold: float = 0.95
    window: int = 10
    memorize_threshold: float = 0.99
    grok_epoch: int | None = None
    memorized_epoch: int | None = None
    _streak: list[int] = field(default_factory=list)

    def update(self, epoch: int, train_acc: float, val_acc: float) -> None:
        if self.memorized_epoch is None and train_acc >= self.memorize_threshold:
            self.memorized_epoch = epoch
        if self.grok_epoch is not None:
            return
        self._streak = self._streak + [epoch] if val_acc >= self.threshold else []
        if len(self._streak) >= self.window:
            self.grok_epoch = self._streak[0]

    @property
    def grokked(self) -> bool:
        return self.grok_epoch is not None
