"""Learning-rate schedules as picklable ``LambdaLR`` multipliers (checkpoints store them)."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class WarmupCosine:
    """Linear warm-up over ``warmup_steps``, then cosine decay to ``final_ratio`` at ``total_steps``."""

    warmup_steps: int = 0
    total_steps: int = 100_000
    final_ratio: float = 0.1

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.final_ratio + (1.0 - self.final_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
