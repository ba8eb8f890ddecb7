"""Stage 3: latent distillation of a shallow student from the CFG-guided teacher (Pocket TTS §8.2).

Per batch the frozen teacher (eval mode: no CFG dropout, no context noise) runs twice, with and
without voice and text, and the student regresses by MSE onto ``z_null + α(z_cond − z_null)`` at
every valid position (the EOS position included). The student starts as a copy of the teacher
with a subset of its layers (default: the "ends", e.g. 24 -> 6 keeps 0, 1, 2, 21, 22, 23); its head
and EOS head stay frozen copies of the teacher's, so guidance is baked into the backbone and the
student samples with one pass at CFG 1.

Optionally (``context_noise`` > 0, not in Kyutai's recipe) both models read the same CALM-noised
context latents during training, so the student also matches the teacher a little off the data: a
student that only ever saw clean teacher-forced contexts can drift away from its teacher once it
reads its own sampled latents.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch

from pockettts.data.examples import TeacherBatch
from pockettts.models.bundle import read_export
from pockettts.models.flow_lm import ContextNoise, FlowLM
from pockettts.training.ema import EMA, EMAWeightsMixin
from pockettts.training.guard import NonFiniteGuard
from pockettts.training.optimization import GuardedOptimizationMixin
from pockettts.training.teacher_module import export_flow_lm, load_weights, teacher_forced
from pockettts.training.text_progress import TextProgressMixin

log = logging.getLogger(__name__)


# The teacher's parts the student uses as they are.
FROZEN_PARTS = ("head", "out_eos")


def ends_layers(teacher_layers: int, student_layers: int) -> list[int]:
    """The bottom ``ceil(n/2)`` and top ``floor(n/2)`` teacher layers (won Kyutai's 4-way ablation)."""
    if not 0 < student_layers <= teacher_layers:
        raise ValueError(f"cannot take {student_layers} layers from a {teacher_layers}-layer teacher")
    bottom = (student_layers + 1) // 2
    top = student_layers - bottom
    return list(range(bottom)) + list(range(teacher_layers - top, teacher_layers))


def student_from_teacher(teacher: FlowLM, layers: Sequence[int]) -> FlowLM:
    """A student with ``teacher``'s config and weights but only the transformer ``layers`` (in order);
    no context noise (the student reads clean latents, as at inference)."""
    config = {**copy.deepcopy(teacher.config), "num_layers": len(layers), "context_noise": None}
    student = FlowLM(**config)
    source = teacher.state_dict()
    state = {}
    for name in student.state_dict():
        if name.startswith("transformer.layers."):
            index, rest = name.removeprefix("transformer.layers.").split(".", 1)
            name_in_teacher = f"transformer.layers.{layers[int(index)]}.{rest}"
        else:
            name_in_teacher = name
        state[name] = source[name_in_teacher]
    student.load_state_dict(state)
    return student


class DistillationModule(TextProgressMixin, GuardedOptimizationMixin, EMAWeightsMixin, L.LightningModule):
    """Distils an exported teacher into a ``num_layers`` student on ``TeacherDataModule`` batches.

    Args:
        teacher: the exported teacher (``.safetensors``); loaded frozen, kept out of checkpoints.
        num_layers: student depth; ``layers`` picks the teacher layers explicitly (default "ends").
        cfg_scale: α of the guided target (1 = pure depth distillation; open recipe 2.0).
        context_noise: maximum level k of the noise ``sqrt(k)·ε + sqrt(1−k)·x`` (uniform per frame)
            on the normalised latents both models read in training; 0 = clean, as in Kyutai's recipe.
        init_from: an exported student of this shape to start from instead of the teacher's layers
            (e.g. a student of an earlier teacher); the head and EOS head stay this teacher's.
        optimizer, lr_schedule, grad_clip, ema_decay, max_bad_steps, export_path, seed: as for the teacher.
    """

    checkpoint_key = "distillation"

    def __init__(
        self,
        teacher: str,
        optimizer: Callable[..., torch.optim.Optimizer],
        num_layers: int = 6,
        layers: Sequence[int] | None = None,
        cfg_scale: float = 2.0,
        context_noise: float = 0.0,
        lr_schedule: dict[str, Any] | None = None,
        grad_clip: float = 1.0,
        ema_decay: float | None = 0.9999,
        max_bad_steps: int = 20,
        init_from: str | None = None,
        export_path: str | None = None,
        seed: int = 0,
    ):
        super().__init__()
        self.automatic_optimization = False
        frozen_teacher = read_export(teacher).flow_lm.requires_grad_(False)
        object.__setattr__(self, "teacher", frozen_teacher)  # not a submodule: no copies in checkpoints
        self.teacher_path = teacher
        teacher_depth = len(frozen_teacher.transformer.layers)
        self.layers = list(layers) if layers is not None else ends_layers(teacher_depth, num_layers)
        if any(not 0 <= i < teacher_depth for i in self.layers):
            raise ValueError(f"layers {self.layers} out of range for a {teacher_depth}-layer teacher")
        self.model = student_from_teacher(frozen_teacher, self.layers)
        if init_from:
            load_weights(self.model, init_from, init_fresh=FROZEN_PARTS)
        for part in FROZEN_PARTS:
            getattr(self.model, part).requires_grad_(False)
        log.info("student: teacher layers %s of %d, head and EOS head frozen", self.layers, teacher_depth)
        self.optimizer_factory = optimizer
        self.cfg_scale = cfg_scale
        self.context_noise = ContextNoise(max_level=context_noise)  # a no-op in eval mode (validation)
        self.lr_schedule = dict(lr_schedule or {})
        self.grad_clip = grad_clip
        self.ema = EMA(self.model, ema_decay) if ema_decay else None
        self.guard = NonFiniteGuard(max_bad_steps)
        self.export_path = export_path
        self.seed = seed

    def setup(self, stage: str) -> None:
        self.teacher.to(self.device).eval()
        if self.ema is not None:
            self.ema.to(self.device)

    def train(self, mode: bool = True):
        super().train(mode)
        self.model.head.eval()  # frozen copy: no training-mode behaviour (e.g. LSD's distill schedule)
        return self

    def noisy_context(self, batch: TeacherBatch) -> TeacherBatch:
        """``batch`` with its ``target`` latents ``[B, F, d]`` noised (in the teacher's normalisation) when
        training with ``context_noise``; the loss is still taken on the backbone outputs ``z``."""
        if not self.training or self.context_noise.max_level == 0.0:
            return batch
        noisy, _ = self.context_noise(self.teacher.normalize(batch.target))
        return dataclasses.replace(batch, target=self.teacher.denormalize(noisy))

    @torch.no_grad()
    def guided_target(self, batch: TeacherBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher's ``z_null + α(z_cond − z_null)`` ``[B, F + 1, d]`` and the valid mask ``[B, F + 1]``."""
        conditioned = teacher_forced(self.teacher, batch)
        if self.cfg_scale == 1.0:
            return conditioned["z"], conditioned["valid"]
        everything = torch.ones(batch.size, dtype=torch.bool, device=self.device)
        null = teacher_forced(self.teacher, batch, drop_voice=everything, drop_text=everything)["z"]
        return null + self.cfg_scale * (conditioned["z"] - null), conditioned["valid"]

    def loss(self, batch: TeacherBatch) -> torch.Tensor:
        batch = self.noisy_context(batch)
        target, valid = self.guided_target(batch)
        z = teacher_forced(self.model, batch)["z"]
        return (z[valid].float() - target[valid].float()).pow(2).mean()

    def training_step(self, batch: TeacherBatch, batch_idx: int) -> None:
        self.seed_step()
        loss = self.loss(batch)
        self.guarded_step(loss)
        self.log("train/loss", loss.detach(), on_step=True, prog_bar=True, batch_size=batch.size)
        self.log("train/skipped_steps", float(self.guard.skipped), on_step=True)

    def validation_step(self, batch: TeacherBatch, batch_idx: int) -> None:
        self.log("val/loss", self.loss(batch), batch_size=batch.size, sync_dist=True)
        self.accumulate_text_progress(batch)

    def on_train_end(self) -> None:
        if self.export_path and self.trainer.is_global_zero:
            with self.exported_weights() as model:
                path = export_flow_lm(
                    model, Path(self.export_path), getattr(self.trainer, "datamodule", None),
                    step=self.global_step, ema=self.ema is not None,
                )  # fmt: skip
            log.info("exported student to %s", path)
