"""One run or one pack: the job body Hydra calls, the loop, the stack, the stopping rule, the run's record."""
