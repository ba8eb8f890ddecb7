"""Stage 3: distillation of a student from the CFG-guided teacher, with guidance baked in.

Per batch the frozen teacher (eval mode: no CFG dropout, no context noise) runs twice, with and
without voice and text, and gives the guided backbone output ``z_null + α(z_cond − z_null)`` at every
valid position (the EOS position included). The student samples with one pass at CFG 1. Two levels:

* backbone (Pocket TTS §8.2, Kyutai's depth distillation; the default): the student is a copy of the
  teacher with a subset of its layers (default: the "ends", e.g. 24 -> 6 keeps 0, 1, 2, 21, 22, 23);
  its head and EOS head stay frozen copies of the teacher's, and its ``z`` regresses by MSE onto the
  guided ``z``.
* sample (``student``: a FlowLM config): the student has its own architecture (width, attention,
  ``z_dim``, head kind) and its own trainable head, so ``z`` cannot be compared. Per valid position
  and each of ``batch_multiplier`` noise draws ``ε``, the frozen teacher head's sample from the
  guided ``z`` is the target of the student head's sample from its own ``z`` with the same ``ε``
  (MSE, normalised latents): the student learns the teacher's guided noise -> latent map, one step.
  The EOS head learns the teacher's guided end-of-speech probability (``eos_target``).

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
import torch.nn.functional as F

from pockettts.data.examples import TeacherBatch
from pockettts.models.bundle import read_export
from pockettts.models.flow_lm import ContextNoise, FlowLM
from pockettts.models.heads import LSDHead, PointwiseHead
from pockettts.training.ema import EMA, EMAWeightsMixin
from pockettts.training.guard import NonFiniteGuard
from pockettts.training.optimization import GuardedOptimizationMixin
from pockettts.training.teacher_module import export_flow_lm, load_weights, teacher_forced
from pockettts.training.text_progress import TextProgressMixin
from pockettts.training.warm_start import warm_start

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


# Must equal between teacher and student: they read the same tokens and voices and write the same latents.
SHARED_INTERFACE = ("latent_dim", "voice_dim", "vocab_size", "insert_bos_before_voice")


def student_of_own_architecture(
    teacher: FlowLM,
    config: dict[str, Any],
    head_from_teacher: bool = False,
    init_from: str | None = None,
    init_student_from: str | None = None,
) -> FlowLM:
    """A FlowLM of ``config``, fresh or with ``init_from``'s weights (an exported student of that
    shape), reading the teacher's latent normalisation (frozen), so both heads sample the same
    normalised latents. ``head_from_teacher``: the student's pointwise head starts as the teacher LSD
    head's exact one-step sampler (``PointwiseHead.from_lsd``), which needs the same head widths and a
    student ``z_dim`` equal to the teacher's. ``init_student_from``: an export of another architecture of
    the same width (e.g. a backbone-level student) converted by ``warm_start`` (grouped key/value heads,
    factorised ``z`` bottleneck; the head from the teacher's when ``head_from_teacher``, else its own)."""
    if config.get("context_noise") is not None:
        raise ValueError("the student reads clean latents: distillation's own context_noise noises both")
    if head_from_teacher and init_from:
        raise ValueError("head_from_teacher and init_from both set the student's head: choose one")
    if init_from and init_student_from:
        raise ValueError("init_from and init_student_from both set the student: choose one")
    student = FlowLM(**config)
    differ = [k for k in SHARED_INTERFACE if student.config[k] != teacher.config[k]]
    if differ:
        theirs = [teacher.config[k] for k in differ]
        raise ValueError(f"the student's {differ} must equal the teacher's ({theirs})")
    if init_from:
        load_weights(student, init_from)
    if init_student_from:
        source = read_export(init_student_from).flow_lm
        warm_start(student, source, teacher.head if head_from_teacher else None)
    student.set_latent_statistics(teacher.emb_mean, teacher.emb_std)
    if head_from_teacher and not init_student_from:
        start_head_from_teacher(student, teacher)
    return student


def start_head_from_teacher(student: FlowLM, teacher: FlowLM) -> None:
    """Load the teacher LSD head's one-step sampler into the student's pointwise head."""
    if not isinstance(student.head, PointwiseHead) or not isinstance(teacher.head, LSDHead):
        raise ValueError(
            "head_from_teacher needs a pointwise student head and an LSD teacher head, got "
            f"{type(student.head).__name__} and {type(teacher.head).__name__}"
        )
    converted = PointwiseHead.from_lsd(teacher.head).flow_net.state_dict()
    own = student.head.flow_net.state_dict()
    misfit = sorted(set(own) ^ set(converted)) or [k for k in own if own[k].shape != converted[k].shape]
    if misfit:
        raise ValueError(
            f"the teacher head does not fit the student's ({misfit[:3]}): the student needs z_dim "
            f"{teacher.head.cond_dim} and the teacher head's dim and depth"
        )
    student.head.flow_net.load_state_dict(converted)


class DistillationModule(TextProgressMixin, GuardedOptimizationMixin, EMAWeightsMixin, L.LightningModule):
    """Distils an exported teacher into a student on ``TeacherDataModule`` batches (module docstring:
    backbone-level into a copy of some of the teacher's layers, or sample-level into a ``student``
    of its own architecture).

    Args:
        teacher: the exported teacher (``.safetensors``); loaded frozen, kept out of checkpoints.
        num_layers: backbone level: student depth (default 6, Kyutai's); ``layers`` picks the teacher
            layers explicitly (default "ends").
        student: sample level: the student's ``FlowLM`` arguments (its head included); ``num_layers``
            and ``layers`` then stay unset.
        cfg_scale: α of the guided target (1 = pure depth distillation; open recipe 2.0).
        context_noise: maximum level k of the noise ``sqrt(k)·ε + sqrt(1−k)·x`` (uniform per frame)
            on the normalised latents both models read in training; 0 = clean, as in Kyutai's recipe.
        batch_multiplier: sample level: noise draws per valid position.
        eos_target: sample level: ``"teacher"`` (BCE toward the teacher's end-of-speech probability at
            the guided ``z``, the one its sampler stops on) or ``"labels"`` (BCE toward the data's
            end frame, as a teacher learns it).
        eos_loss_weight: sample level: weight of the EOS term beside the sample MSE.
        head_from_teacher: sample level: start a pointwise student head from the teacher's LSD head
            (``student_of_own_architecture``).
        teacher_head_steps: sample level: the teacher head's sampling steps (its default when None).
        init_from: an exported student of this shape to start from instead of the teacher's layers
            (e.g. a student of an earlier teacher); at backbone level the head and EOS head stay
            this teacher's.
        init_student_from: sample level: an export of the student's width but another architecture
            to convert into it (``student_of_own_architecture``).
        optimizer, lr_schedule, grad_clip, ema_decay, max_bad_steps, export_path, seed: as for the teacher.
    """

    checkpoint_key = "distillation"

    def __init__(
        self,
        teacher: str,
        optimizer: Callable[..., torch.optim.Optimizer],
        num_layers: int | None = None,
        layers: Sequence[int] | None = None,
        student: dict[str, Any] | None = None,
        cfg_scale: float = 2.0,
        context_noise: float = 0.0,
        batch_multiplier: int = 4,
        eos_target: str = "teacher",
        eos_loss_weight: float = 0.1,
        head_from_teacher: bool = False,
        teacher_head_steps: int | None = None,
        lr_schedule: dict[str, Any] | None = None,
        grad_clip: float = 1.0,
        ema_decay: float | None = 0.9999,
        max_bad_steps: int = 20,
        init_from: str | None = None,
        init_student_from: str | None = None,
        export_path: str | None = None,
        seed: int = 0,
    ):
        super().__init__()
        self.automatic_optimization = False
        frozen_teacher = read_export(teacher).flow_lm.requires_grad_(False)
        object.__setattr__(self, "teacher", frozen_teacher)  # not a submodule: no copies in checkpoints
        self.teacher_path = teacher
        self.sample_level = student is not None
        if self.sample_level:
            self._check_sample_level(num_layers, layers, batch_multiplier, eos_target)
            self.model = student_of_own_architecture(
                frozen_teacher, student, head_from_teacher, init_from, init_student_from
            )
            log.info("student of its own architecture, sample-level distillation (%s)", self.model.config)
        else:
            if head_from_teacher:
                raise ValueError("head_from_teacher is for a student of its own architecture (student=...)")
            self.model = self._backbone_student(frozen_teacher, num_layers, layers, init_from)
        self.optimizer_factory = optimizer
        self.cfg_scale = cfg_scale
        self.context_noise = ContextNoise(max_level=context_noise)  # a no-op in eval mode (validation)
        self.batch_multiplier = batch_multiplier
        self.eos_target = eos_target
        self.eos_loss_weight = eos_loss_weight
        self.teacher_head_steps = teacher_head_steps
        self.lr_schedule = dict(lr_schedule or {})
        self.grad_clip = grad_clip
        self.ema = EMA(self.model, ema_decay) if ema_decay else None
        self.guard = NonFiniteGuard(max_bad_steps)
        self.export_path = export_path
        self.seed = seed

    def _backbone_student(
        self, teacher: FlowLM, num_layers: int | None, layers: Sequence[int] | None, init_from: str | None
    ) -> FlowLM:
        """A copy of ``layers`` (default: the ``num_layers`` "ends") of ``teacher``, head and EOS frozen."""
        teacher_depth = len(teacher.transformer.layers)
        self.layers = list(layers) if layers is not None else ends_layers(teacher_depth, num_layers or 6)
        if any(not 0 <= i < teacher_depth for i in self.layers):
            raise ValueError(f"layers {self.layers} out of range for a {teacher_depth}-layer teacher")
        model = student_from_teacher(teacher, self.layers)
        if init_from:
            load_weights(model, init_from, init_fresh=FROZEN_PARTS)
        for part in FROZEN_PARTS:
            getattr(model, part).requires_grad_(False)
        log.info("student: teacher layers %s of %d, head and EOS head frozen", self.layers, teacher_depth)
        return model

    @staticmethod
    def _check_sample_level(
        num_layers: int | None, layers: Sequence[int] | None, batch_multiplier: int, eos_target: str
    ) -> None:
        if num_layers is not None or layers is not None:
            raise ValueError(
                "a student of its own architecture has its depth in `student`: unset num_layers, layers"
            )
        if batch_multiplier < 1:
            raise ValueError(f"batch_multiplier must be >= 1, got {batch_multiplier}")
        if eos_target not in ("teacher", "labels"):
            raise ValueError(f"eos_target must be 'teacher' or 'labels', got {eos_target!r}")

    def setup(self, stage: str) -> None:
        self.teacher.to(self.device).eval()
        if self.ema is not None:
            self.ema.to(self.device)

    def train(self, mode: bool = True):
        super().train(mode)
        if not self.sample_level:
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

    def losses(self, batch: TeacherBatch) -> dict[str, torch.Tensor]:
        """``loss`` (what is optimised) and, at sample level, its ``sample`` and ``eos`` terms."""
        batch = self.noisy_context(batch)
        target, valid = self.guided_target(batch)
        out = teacher_forced(self.model, batch)
        if not self.sample_level:
            return {"loss": (out["z"][valid].float() - target[valid].float()).pow(2).mean()}
        sample = self.sample_loss(out["z"][valid], target[valid])
        eos = self.eos_loss(out["eos_logits"][valid], target[valid], valid, batch.target_lengths)
        return {"loss": sample + self.eos_loss_weight * eos, "sample": sample, "eos": eos}

    def loss(self, batch: TeacherBatch) -> torch.Tensor:
        return self.losses(batch)["loss"]

    def sample_loss(self, z: torch.Tensor, guided: torch.Tensor) -> torch.Tensor:
        """MSE between the student head's samples from ``z`` ``[N, z_dim]`` and the teacher head's from
        the ``guided`` teacher ``z`` ``[N, d]``, ``batch_multiplier`` shared noise draws per row."""
        k = self.batch_multiplier
        z, guided = z.float().repeat(k, 1), guided.float().repeat(k, 1)
        noise = torch.randn(z.shape[0], self.model.latent_dim, device=z.device)
        target = self.teacher.head.sample(guided, noise, self.teacher_head_steps)
        # decode, not sample: the student's samples carry gradients to its head and backbone
        sample = self.model.head.decode(z, noise, self.model.head.default_sample_steps)
        return (sample - target).pow(2).mean()

    def eos_loss(
        self, logits: torch.Tensor, guided: torch.Tensor, valid: torch.Tensor, target_lengths: torch.Tensor
    ) -> torch.Tensor:
        """BCE of the student's EOS ``logits`` ``[N]`` (the valid positions of ``valid`` ``[B, F + 1]``)
        toward ``eos_target``: the teacher's probability at the ``guided`` ``z`` ``[N, d]`` (out_eos is
        linear, so this is its guided logit ``l_null + α(l_cond − l_null)``), or the data's end frame."""
        if self.eos_target == "teacher":
            with torch.no_grad():
                target = torch.sigmoid(self.teacher.out_eos(guided.float()).squeeze(-1))
        else:
            positions = torch.arange(valid.shape[1], device=valid.device)[None, :]
            target = (positions == target_lengths[:, None]).float()[valid]
        return F.binary_cross_entropy_with_logits(logits.float(), target)

    def training_step(self, batch: TeacherBatch, batch_idx: int) -> None:
        self.seed_step()
        losses = self.losses(batch)
        self.guarded_step(losses["loss"])
        self.log("train/loss", losses["loss"].detach(), on_step=True, prog_bar=True, batch_size=batch.size)
        for name in ("sample", "eos"):
            if name in losses:
                self.log(f"train/{name}", losses[name].detach(), on_step=True, batch_size=batch.size)
        self.log("train/skipped_steps", float(self.guard.skipped), on_step=True)

    def validation_step(self, batch: TeacherBatch, batch_idx: int) -> None:
        # The sample level draws noise: the same draws for a batch at every validation.
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed + batch_idx)
            losses = self.losses(batch)
        self.log_dict({f"val/{k}": v for k, v in losses.items()}, batch_size=batch.size, sync_dist=True)
        self.accumulate_text_progress(batch)

    def on_train_end(self) -> None:
        if self.export_path and self.trainer.is_global_zero:
            with self.exported_weights() as model:
                path = export_flow_lm(
                    model, Path(self.export_path), getattr(self.trainer, "datamodule", None),
                    step=self.global_step, ema=self.ema is not None,
                )  # fmt: skip
            log.info("exported student to %s", path)
