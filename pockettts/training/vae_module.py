"""Lightning training of the audio VAE as a VAE-GAN (stage 1).

Manual optimisation: per batch, one discriminator step on (real, detached reconstruction), then one
generator step on the weighted sum of adversarial, feature-matching, KL and the optional
reconstruction and self-supervised distillation terms (paper speech setting: no reconstruction,
KL 0.01, distillation 25). ``global_step`` counts generator updates only (the discriminator's
optimizer is stepped outside Lightning's step counter), so ``max_steps`` means what users expect.

A new (e.g. light) decoder on a frozen encoder's latents can also learn from a teacher codec's
decoder: ``teacher_mel`` is the mel loss to what the teacher decodes from the same latents.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn

from pockettts.losses.adversarial import discriminator_loss, feature_matching_loss, generator_adversarial_loss
from pockettts.losses.kl import gaussian_kl
from pockettts.losses.spectral import mel_distance
from pockettts.losses.ssl_distillation import LatentFeatureDistillation, SSLFeatureTeacher, load_ssl_teacher
from pockettts.models.vae import AudioVAE, latent_space_hash, load_vae, vae_latent_hash
from pockettts.modules.conv import fold_weight_norm
from pockettts.training.ema import EMA, EMAWeightsMixin
from pockettts.training.guard import NonFiniteGuard
from pockettts.training.schedules import WarmupCosine

log = logging.getLogger(__name__)

LOSS_TERMS = ("adversarial", "feature_matching", "kl", "mel", "stft", "asr", "distillation", "teacher_mel")


@contextmanager
def frozen(module: nn.Module | None):
    """No gradients for ``module``'s parameters inside the block (the generator step must not
    accumulate discriminator gradients)."""
    params = [p for p in module.parameters() if p.requires_grad] if module is not None else []
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


class VAETrainingModule(EMAWeightsMixin, L.LightningModule):
    """Trains ``vae`` (an ``AudioVAE``) against ``discriminator``; exports EMA weights at the end.

    Args:
        vae: the generator.
        discriminator: a module mapping ``[B, 1, T]`` audio to ``[(logits, features), ...]``, or
            ``None`` for a reconstruction-only autoencoder.
        loss_weights: weight per term of ``LOSS_TERMS``; a term with weight 0 is not computed.
        mel_loss, stft_loss: reconstruction losses (``[B, 1, T]`` pairs -> scalar), or ``None``.
        asr_loss: a perceptual loss of the same form from a frozen recogniser
            (``pockettts.losses.asr_perceptual.WhisperFeatureLoss``), or ``None``.
        ssl_teacher: keyword arguments of ``load_ssl_teacher`` (a local WavLM checkpoint), or ``None``.
        adversarial_warmup_steps: generator steps before the discriminator starts (and before the
            adversarial and feature-matching terms count).
        generator_optimizer, discriminator_optimizer: ``params -> Optimizer`` factories.
        lr_schedule: ``WarmupCosine`` keyword arguments (``total_steps`` defaults to ``max_steps``).
        ema_decay: decay of the exported EMA weights, or ``None`` to export the raw weights.
        max_bad_steps: consecutive non-finite steps tolerated (skipped, reported) before failing.
        noise_seed: seed of the module's own posterior-sampling generator (saved in checkpoints, so
            resuming draws the same noise as an uninterrupted run).
        init_from: an exported VAE (``.safetensors``) to start from; see ``pockettts.compat.mimi``
            to convert a released Pocket TTS codec into one.
        train_encoder: ``False`` freezes everything that shapes the latents (a decoder-only
            fine-tune, e.g. an adversarial phase after ``init_from``): the latents, and so every
            latent cache and backbone trained on them, stay valid; the KL term is then constant.
        init_decoder: ``False`` takes only the encoder side from ``init_from`` and keeps this
            model's new decoder, which may be wider or deeper (with ``train_encoder=False``: a new
            decoder for an existing codec's latents).
        teacher_codec: an exported codec with this model's encoder side (the same latent space, e.g.
            the full codec a light decoder replaces), or ``None``. With weight ``teacher_mel`` the
            decoder also learns to sound like the teacher: the term is ``mel_loss`` between this
            model's decoding and the teacher's decoding of the same latents. Needs
            ``train_encoder=False`` (the teacher's decoder only knows its own latents).
        export_path: where ``on_train_end`` writes the exported VAE.
    """

    ema_module_name = "vae"

    def __init__(
        self,
        vae: AudioVAE,
        discriminator: nn.Module | None,
        generator_optimizer: Callable[..., torch.optim.Optimizer],
        discriminator_optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        loss_weights: dict[str, float] | None = None,
        adversarial_loss: str = "hinge",
        mel_loss: nn.Module | None = None,
        stft_loss: nn.Module | None = None,
        asr_loss: nn.Module | None = None,
        ssl_teacher: dict[str, Any] | None = None,
        adversarial_warmup_steps: int = 0,
        lr_schedule: dict[str, Any] | None = None,
        generator_grad_clip: float = 1000.0,
        discriminator_grad_clip: float = 10.0,
        sample_posterior: bool = True,
        ema_decay: float | None = 0.999,
        max_bad_steps: int = 20,
        init_from: str | None = None,
        train_encoder: bool = True,
        init_decoder: bool = True,
        export_path: str | None = None,
        noise_seed: int = 0,
        teacher_codec: str | None = None,
    ):
        super().__init__()
        self.automatic_optimization = False
        weights = {term: 0.0 for term in LOSS_TERMS}
        unknown = set(loss_weights or {}) - set(LOSS_TERMS)
        if unknown:
            raise ValueError(f"unknown loss terms {sorted(unknown)}; known: {LOSS_TERMS}")
        weights.update(loss_weights or {})
        self.loss_weights = weights
        if discriminator is None and (weights["adversarial"] or weights["feature_matching"]):
            raise ValueError("adversarial/feature_matching weights need a discriminator")
        if weights["mel"] and mel_loss is None or weights["stft"] and stft_loss is None:
            raise ValueError("a mel/stft weight is set but its loss module is missing")
        if weights["asr"] and asr_loss is None:
            raise ValueError("an asr weight is set but no asr_loss (e.g. WhisperFeatureLoss) is given")
        if weights["distillation"] and ssl_teacher is None:
            raise ValueError("distillation weight is set but no ssl_teacher checkpoint is given")
        if weights["distillation"] and not train_encoder:
            raise ValueError("distillation trains the encoder's latents; it needs train_encoder=True")
        if weights["teacher_mel"] and (teacher_codec is None or mel_loss is None):
            raise ValueError("a teacher_mel weight needs a teacher_codec and a mel_loss")
        if teacher_codec is not None and train_encoder:
            raise ValueError("a teacher_codec decodes its own latents only: set train_encoder=False")
        self.vae = vae
        if not init_decoder and not init_from:
            raise ValueError("init_decoder=False keeps init_from's encoder side: set init_from")
        if not train_encoder:  # before loading: a frozen encoder's weights then load exactly
            self.vae.drop_encoder_weight_norm()
        if init_from:
            self.vae.load_inference_state_dict(
                load_vae(init_from).inference_state_dict(), encoder_only=not init_decoder
            )
            log.info("VAE %sinitialised from %s", "" if init_decoder else "encoder side ", init_from)
        if not train_encoder:  # before the EMA, which then averages the decoder side only
            for param in self.vae.encoder_parameters():
                param.requires_grad_(False)
        # Kept out of the module tree: its frozen weights do not belong in checkpoints.
        object.__setattr__(self, "teacher_codec", self._load_teacher_codec(teacher_codec))
        self.discriminator = discriminator
        self.mel_loss, self.stft_loss, self.asr_loss = mel_loss, stft_loss, asr_loss
        self.ssl_teacher: SSLFeatureTeacher | None = None
        self.distillation: LatentFeatureDistillation | None = None
        if weights["distillation"]:
            teacher = load_ssl_teacher(**ssl_teacher)
            # Kept out of the module tree: its frozen weights do not belong in checkpoints.
            object.__setattr__(self, "ssl_teacher", teacher)
            self.distillation = LatentFeatureDistillation(
                latent_dim=vae.latent_dim, feature_dim=teacher.feature_dim, latent_frame_rate=vae.frame_rate
            )
        self.generator_optimizer = generator_optimizer
        self.discriminator_optimizer = discriminator_optimizer
        self.adversarial_loss = adversarial_loss
        self.adversarial_warmup_steps = adversarial_warmup_steps
        self.lr_schedule = dict(lr_schedule or {})
        self.generator_grad_clip = generator_grad_clip
        self.discriminator_grad_clip = discriminator_grad_clip
        self.sample_posterior = sample_posterior
        self.ema = EMA(self.vae, ema_decay) if ema_decay else None
        self.guard = NonFiniteGuard(max_bad_steps)
        self.export_path = export_path
        self.noise_seed = noise_seed
        self._noise: torch.Generator | None = None
        self._noise_state: torch.Tensor | None = None

    def _load_teacher_codec(self, path: str | None) -> AudioVAE | None:
        """The frozen teacher codec at ``path``, checked to encode this model's latent space."""
        if path is None:
            return None
        teacher = load_vae(path).requires_grad_(False)
        own = latent_space_hash(self.vae.inference_state_dict(), self.vae.config)
        theirs = vae_latent_hash(path)
        if theirs != own:
            raise ValueError(
                f"the teacher codec {path} has another encoder side than this model (latent hash "
                f"{theirs[:12]} vs {own[:12]}): set init_from to a codec with its encoder"
            )
        log.info("teacher codec %s: its decoding of the same latents is the teacher_mel target", path)
        return teacher

    # -- optimisation -----------------------------------------------------------------------------
    def generator_parameters(self) -> list[nn.Parameter]:
        modules = [self.vae] + ([self.distillation] if self.distillation is not None else [])
        return [p for m in modules for p in m.parameters() if p.requires_grad]

    def configure_optimizers(self):
        optimizers = [self.generator_optimizer(self.generator_parameters())]
        if self.discriminator is not None:
            if self.discriminator_optimizer is None:
                raise ValueError("a discriminator needs a discriminator_optimizer")
            optimizers.append(self.discriminator_optimizer(self.discriminator.parameters()))
        max_steps = self.trainer.max_steps if self.trainer.max_steps > 0 else 100_000
        schedule = WarmupCosine(**{"total_steps": max_steps, **self.lr_schedule})
        schedulers = [torch.optim.lr_scheduler.LambdaLR(opt, schedule) for opt in optimizers]
        return optimizers, schedulers

    def setup(self, stage: str) -> None:
        if self.ssl_teacher is not None:
            self.ssl_teacher.to(self.device)
        if self.teacher_codec is not None:
            self.teacher_codec.to(self.device)
        if self.ema is not None:
            self.ema.to(self.device)

    def noise_generator(self) -> torch.Generator:
        """The posterior-sampling RNG, one stream per rank, restored from checkpoints."""
        if self._noise is None or self._noise.device != self.device:
            self._noise = torch.Generator(device=self.device)
            self._noise.manual_seed(self.noise_seed + self.global_rank)
            if self._noise_state is not None:
                self._noise.set_state(self._noise_state)
        return self._noise

    def adversarial_active(self) -> bool:
        return self.discriminator is not None and self.global_step >= self.adversarial_warmup_steps

    def _step_if_finite(self, loss: torch.Tensor, optimizer, params, clip: float, name: str) -> float | None:
        """Backward and clip unless the loss (on any rank) or the gradient norm (all-reduced, so the same
        on every rank) is not finite; returns the grad norm."""
        optimizer.zero_grad(set_to_none=True)
        if not self.guard.ok_on_every_rank(loss, f"{name} loss", self.global_step, self.trainer.strategy):
            return None
        self.manual_backward(loss)
        norm = torch.nn.utils.clip_grad_norm_(params, clip)
        if not self.guard.ok(norm, f"{name} gradient norm", self.global_step):
            optimizer.zero_grad(set_to_none=True)
            return None
        return float(norm)

    # -- steps ------------------------------------------------------------------------------------
    def generator_losses(self, audio: torch.Tensor, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Every weighted term for the generator (``audio``, ``out['reconstruction']``: ``[B, 1, T]``)."""
        w = self.loss_weights
        reconstruction = out["reconstruction"]
        losses = {"kl": gaussian_kl(out["mean"].float(), out["logvar"].float())}
        if w["mel"]:
            losses["mel"] = self.mel_loss(reconstruction, audio)
        if w["stft"]:
            losses["stft"] = self.stft_loss(reconstruction, audio)
        if w["asr"]:
            losses["asr"] = self.asr_loss(reconstruction, audio)
        if w["distillation"]:
            losses["distillation"] = self.distillation(out["mean"], self.ssl_teacher(audio))
        if w["teacher_mel"]:
            losses["teacher_mel"] = self.mel_loss(reconstruction, self.teacher_decoding(out["latent"], audio))
        if self.adversarial_active():
            with frozen(self.discriminator):
                fake_outputs = self.discriminator(reconstruction)
                with torch.no_grad():
                    real_outputs = self.discriminator(audio)
            losses["adversarial"] = generator_adversarial_loss(fake_outputs, self.adversarial_loss)
            losses["feature_matching"] = feature_matching_loss(real_outputs, fake_outputs)
        return losses

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        audio = batch["audio"]
        optimizers = self.optimizers()
        opt_g = optimizers[0] if isinstance(optimizers, list) else optimizers
        schedulers = self.lr_schedulers()
        schedulers = schedulers if isinstance(schedulers, list) else [schedulers]
        out = self.vae(audio, sample=self.sample_posterior, generator=self.noise_generator())
        out["reconstruction"] = out["reconstruction"][..., : audio.shape[-1]]
        logs: dict[str, float] = {}

        if self.adversarial_active():
            opt_d = optimizers[1]
            real_outputs = self.discriminator(audio)
            fake_outputs = self.discriminator(out["reconstruction"].detach())
            loss_d = discriminator_loss(real_outputs, fake_outputs, self.adversarial_loss)
            norm = self._step_if_finite(
                loss_d,
                opt_d,
                list(self.discriminator.parameters()),
                self.discriminator_grad_clip,
                "discriminator",
            )
            if norm is not None:
                # The raw optimizer, so that global_step counts generator updates only.
                opt_d.optimizer.step()
                schedulers[1].step()
                logs.update({"train/discriminator": loss_d.item(), "grad_norm/discriminator": norm})

        losses = self.generator_losses(audio, out)
        total = sum(self.loss_weights[name] * value for name, value in losses.items())
        norm = self._step_if_finite(
            total, opt_g, self.generator_parameters(), self.generator_grad_clip, "generator"
        )
        if norm is not None:
            opt_g.step()
            schedulers[0].step()
            self.guard.good_step()
            if self.ema is not None:
                self.ema.update(self.vae)
            logs["grad_norm/generator"] = norm
        logs.update({f"train/{name}": value.item() for name, value in losses.items()})
        logs.update({"train/loss": total.item(), "train/skipped_steps": float(self.guard.skipped)})
        logs.update(latent_statistics(out["mean"].detach(), out["logvar"].detach()))
        self.log_dict(logs, prog_bar=False, on_step=True, batch_size=audio.shape[0])
        self.log("loss", total.item(), prog_bar=True, logger=False, batch_size=audio.shape[0])

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        audio = batch["audio"]
        mean, logvar = self.vae.encode_distribution(audio)
        reconstruction = self.vae.decode_features(mean)[..., : audio.shape[-1]]
        metrics = {
            "val/mel_distance": mel_distance(reconstruction, audio, self.vae.sample_rate),
            "val/kl": gaussian_kl(mean.float(), logvar.float()),
        }
        if self.mel_loss is not None:
            metrics["val/mel"] = self.mel_loss(reconstruction, audio)
        if self.asr_loss is not None:
            metrics["val/asr"] = self.asr_loss(reconstruction, audio)
        if self.teacher_codec is not None:
            teacher = self.teacher_decoding(mean, audio)
            metrics["val/teacher_mel_distance"] = mel_distance(reconstruction, teacher, self.vae.sample_rate)
        self.log_dict(metrics, batch_size=audio.shape[0], sync_dist=True)

    @torch.no_grad()
    def teacher_decoding(self, latent: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """The teacher codec's audio ``[B, 1, T]`` for the conv-layout ``latent`` ``[B, latent_dim, F]``
        of ``audio`` ``[B, 1, T]``."""
        return self.teacher_codec.decode_features(latent)[..., : audio.shape[-1]]

    # -- checkpoints and export -------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["vae_training"] = {
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "guard": self.guard.state_dict(),
            "noise_rng": self.noise_generator().get_state(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # A frozen encoder has plain weights (drop_encoder_weight_norm); checkpoints of decoder-only
        # runs from before that kept it weight-normalised: fold those pairs (Lightning calls this
        # hook before it loads the state dict).
        own = self.state_dict()
        checkpoint["state_dict"] = fold_weight_norm(checkpoint["state_dict"], where=own.__contains__)
        state = checkpoint.get("vae_training")
        if state is None:
            return
        if self.ema is not None and state["ema"] is not None:
            self.ema.load_state_dict(state["ema"])
        self.guard.load_state_dict(state["guard"])
        self._noise_state, self._noise = state["noise_rng"], None

    def export(self, path: str | Path) -> Path:
        """Write the exported VAE (EMA weights, weight norm folded) to ``path``."""
        with self.exported_weights() as vae:
            return vae.save(path)

    @torch.no_grad()
    def reconstruct(self, audio: torch.Tensor) -> torch.Tensor:
        """Encode (posterior mean) and decode with the exported weights: ``[B, 1, T]`` -> ``[B, 1, T]``."""
        with self.exported_weights() as vae:
            return vae.decode_features(vae.encode_mean(audio))[..., : audio.shape[-1]]

    def on_train_end(self) -> None:
        if self.export_path and self.trainer.is_global_zero:
            path = self.export(self.export_path)
            log.info("exported VAE to %s", path)


def latent_statistics(mean: torch.Tensor, logvar: torch.Tensor) -> dict[str, float]:
    """Health of the latent ``[B, D, F]``: scale, posterior noise, and whether it depends on the input.

    ``latent/input_dependence`` is the spread of the per-clip average latent across the batch
    relative to the overall spread: near 0 means the encoder ignores its input (a collapse that
    can otherwise burn a whole run silently).
    """
    mean = mean.float()
    overall = mean.std(dim=(0, 2)).mean()
    across_clips = mean.mean(dim=2).std(dim=0).mean() if mean.shape[0] > 1 else torch.tensor(math.nan)
    return {
        "latent/std": overall.item(),
        "latent/abs_mean": mean.abs().mean().item(),
        "latent/logvar": logvar.float().mean().item(),
        "latent/input_dependence": (across_clips / overall.clamp_min(1e-8)).item(),
    }
