"""The manual optimisation step the backbone stages share (teacher training and distillation):
one AdamW-style optimizer with a warm-up + cosine schedule, a non-finite guard, gradient clipping,
EMA, per-step re-seeding for exact resume, and the EMA/guard state in checkpoints."""

from __future__ import annotations

from typing import Any

import torch

from pockettts.training.schedules import WarmupCosine


class GuardedOptimizationMixin:
    """For LightningModules with ``optimizer_factory``, ``lr_schedule``, ``grad_clip``, ``guard``,
    ``ema`` (over ``self.<ema_module_name>``) and ``seed``; ``checkpoint_key`` names their state."""

    checkpoint_key = "training_state"

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in getattr(self, self.ema_module_name).parameters() if p.requires_grad]

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.trainable_parameters())
        max_steps = self.trainer.max_steps if self.trainer.max_steps > 0 else 100_000
        schedule = WarmupCosine(**{"total_steps": max_steps, **self.lr_schedule})
        return [optimizer], [torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)]

    def seed_step(self) -> None:
        """Every random draw of a step is a function of (seed, step, rank): resume is exact."""
        torch.manual_seed(self.seed + 1_000_003 * self.global_step + 7_919 * self.global_rank)

    def guarded_step(self, loss: torch.Tensor) -> float | None:
        """Backward, clip and step unless the loss or the gradient norm is not finite (then skip and
        report); updates the schedule and the EMA. Returns the gradient norm of a taken step."""
        optimizer, scheduler = self.optimizers(), self.lr_schedulers()
        optimizer.zero_grad(set_to_none=True)
        if not self.guard.ok(loss, "loss", self.global_step):
            return None
        self.manual_backward(loss)
        norm = torch.nn.utils.clip_grad_norm_(self.trainable_parameters(), self.grad_clip)
        if not self.guard.ok(norm, "gradient norm", self.global_step):
            optimizer.zero_grad(set_to_none=True)
            return None
        optimizer.step()
        scheduler.step()
        self.guard.good_step()
        if self.ema is not None:
            self.ema.update(getattr(self, self.ema_module_name))
        self.log("grad_norm", float(norm), on_step=True)
        return float(norm)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[self.checkpoint_key] = {
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "guard": self.guard.state_dict(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get(self.checkpoint_key)
        if state is None:
            return
        if self.ema is not None and state["ema"] is not None:
            self.ema.load_state_dict(state["ema"])
        self.guard.load_state_dict(state["guard"])
