"""Stop requests from the cluster: finish the epoch, checkpoint, then leave the way the signal asked.

SLURM sends SIGTERM on preemption and `scontrol requeue`; submitit has SLURM send SIGUSR2 before the
time limit and requeues the job from its own SIGUSR2 handler. Both are caught here so the loop can write
checkpoints/last.pt first; the previous handler (submitit's) then runs as it would have.
"""

from __future__ import annotations

import signal
import threading

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR2)


class StopRequest:
    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._record) for s in STOP_SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def _record(self, signum, frame) -> None:
        self.signum = signum

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def hand_over(self) -> None:
        """Called once the checkpoint is safe: run the handler we displaced (submitit requeues), else exit."""
        previous = self._previous.get(self.signum)
        self.__exit__()
        if callable(previous):
            previous(self.signum, None)
        raise SystemExit(128 + self.signum)
