"""The manual optimisation step the backbone stages share (teacher training and distillation):
one AdamW-style optimizer with a warm-up + cosine schedule, gradient accumulation, a non-finite
guard, gradient clipping, EMA, per-micro-batch re-seeding for exact resume, and the EMA/guard state
in checkpoints."""

from __future__ import annotations

from typing import Any

import torch

from pockettts.training.schedules import WarmupCosine


class GuardedOptimizationMixin:
    """For LightningModules with ``optimizer_factory``, ``lr_schedule``, ``grad_clip``, ``guard``,
    ``ema`` (over ``self.<ema_module_name>``) and ``seed``; ``checkpoint_key`` names their state."""

    checkpoint_key = "training_state"
    # Micro-batches per optimizer step. Lightning accumulates only under automatic optimisation, so
    # pockettts.training.run moves trainer.accumulate_grad_batches here.
    accumulate_grad_batches: int = 1
    _micro_batch: int = 0  # index of the current micro-batch within its optimizer step
    _step_ok: bool = True  # no micro-batch of the current step had a non-finite loss

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in getattr(self, self.ema_module_name).parameters() if p.requires_grad]

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.trainable_parameters())
        max_steps = self.trainer.max_steps if self.trainer.max_steps > 0 else 100_000
        schedule = WarmupCosine(**{"total_steps": max_steps, **self.lr_schedule})
        return [optimizer], [torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)]

    def on_train_epoch_start(self) -> None:
        # Epochs hold whole optimizer steps (the batch samplers split global batches), so a step
        # never spans two epochs; restart the count in case a resumed epoch ended early.
        self._micro_batch = 0

    def on_validation_model_zero_grad(self) -> None:
        # Lightning frees the gradients before validating; a validation that falls between the
        # micro-batches of one step (val_check_interval counts micro-batches) would drop the ones
        # accumulated so far and change the step.
        if self._micro_batch == 0:
            super().on_validation_model_zero_grad()

    def on_validation_epoch_end(self) -> None:  # see guarded_step on the logged "step"
        self.log("step", float(self.global_step))
        super().on_validation_epoch_end()

    def seed_step(self) -> None:
        """Every random draw of a micro-batch is a function of (seed, step, share), where the share
        ``rank x accumulate + micro-batch`` is that micro-batch's part of the global batch (see
        pockettts.data.batching): resume is exact, and N devices draw what one device accumulating
        N micro-batches draws."""
        share = self.global_rank * self.accumulate_grad_batches + self._micro_batch
        torch.manual_seed(self.seed + 1_000_003 * self.global_step + 7_919 * share)

    def guarded_step(self, loss: torch.Tensor) -> float | None:
        """Backward ``loss / accumulate``; on the step's last micro-batch, clip and step unless a
        loss (on any rank) or the gradient norm was not finite (then skip and report). Updates the
        schedule and the EMA. Returns the gradient norm of a taken step."""
        norm = self._accumulate_and_step(loss)
        # Lightning's logger step counts batches, here micro-batches; a logged "step" replaces it, so
        # curves are over optimizer steps whatever the accumulation (as checkpoints and schedules are).
        self.log("step", float(self.global_step), on_step=True, on_epoch=False)
        return norm

    def _accumulate_and_step(self, loss: torch.Tensor) -> float | None:
        optimizer, scheduler = self.optimizers(), self.lr_schedulers()
        accumulate = self.accumulate_grad_batches
        last = self._micro_batch == accumulate - 1
        if self._micro_batch == 0:
            optimizer.zero_grad(set_to_none=True)
            self._step_ok = True
        self._micro_batch = 0 if last else self._micro_batch + 1
        strategy = self.trainer.strategy
        if self._step_ok and not self.guard.ok_on_every_rank(loss, "loss", self.global_step, strategy):
            self._step_ok = False
        if self._step_ok:
            # Gradients are all-reduced once per optimizer step, on its last micro-batch.
            with optimizer.toggle_model(sync_grad=last):
                self.manual_backward(loss / accumulate)
        if not last:
            return None
        if not self._step_ok:
            optimizer.zero_grad(set_to_none=True)
            return None
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
