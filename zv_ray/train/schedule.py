"""When things happen: the learning-rate schedule, and the step predicates each trainer component owns.

Every predicate is a pure function of the step and the loop state, never of time or rank: Ray Train's report is
a barrier, so every rank must report on the same steps."""

from __future__ import annotations

import math
from dataclasses import dataclass

from zv_ray.config import TrainConfig


def lr_at(step: int, *, lr: float, min_lr: float, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up, then cosine decay to min_lr (nanoGPT's get_lr)."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if step >= total_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)


def last_step(tc: TrainConfig) -> int:
    """Where this invocation stops: train.steps, or train.stop_after when it comes first."""
    return min(tc.steps, tc.stop_after or tc.steps)


@dataclass(frozen=True)
class Every:
    """Due every `n` steps and at the run's final step (the last one, or the one that declared divergence)."""

    n: int

    def __call__(self, step: int, final: bool) -> bool:
        return step % self.n == 0 or final
