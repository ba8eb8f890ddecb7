"""Skip optimisation steps whose loss or gradient is not finite, report them, and give up cleanly."""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)


class NonFiniteGuard:
    """Counts non-finite steps; raises once more than ``max_bad_steps`` happen in a row.

    Checkpoints carry its counters (``state_dict``), so a resumed run reports the same totals.
    """

    def __init__(self, max_bad_steps: int = 20):
        self.max_bad_steps = max_bad_steps
        self.skipped = 0
        self.in_a_row = 0

    def ok(self, value: torch.Tensor, what: str, step: int) -> bool:
        """``True`` if ``value`` (a loss or a gradient norm) is finite; else count and report it."""
        if bool(torch.isfinite(value).all()):
            return True
        self.skipped += 1
        self.in_a_row += 1
        log.warning("step %d skipped: %s is %s (%d skipped so far)", step, what, value.item(), self.skipped)
        if self.in_a_row > self.max_bad_steps:
            raise RuntimeError(
                f"{self.in_a_row} non-finite steps in a row at step {step} ({what} is {value.item()}); "
                "lower the learning rate or check the data; the last good checkpoint is intact"
            )
        return False

    def ok_on_every_rank(self, value: torch.Tensor, what: str, step: int, strategy) -> bool:
        """``ok`` decided by all ranks together: ``True`` only if ``value`` is finite on every rank of
        ``strategy`` (a Lightning strategy: ``reduce_boolean_decision`` all-reduces the flag). Ranks
        must agree to skip a step, or those that step wait forever in the gradient all-reduce of those
        that skipped."""
        finite = bool(torch.isfinite(value).all())
        if strategy.reduce_boolean_decision(finite, all=True):
            return True
        if finite:
            return self.ok(value.new_tensor(float("nan")), f"{what} on another rank", step)
        return self.ok(value, what, step)

    def good_step(self) -> None:
        self.in_a_row = 0

    def state_dict(self) -> dict[str, int]:
        return {"skipped": self.skipped, "in_a_row": self.in_a_row}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.skipped, self.in_a_row = state["skipped"], state["in_a_row"]
