"""Lightning training of the TTS backbone + generation head (stage 2, the teacher).

Per batch: CFG dropout removes each row's voice and/or text with the configured probabilities;
the backbone reads the (optionally noise-augmented) latents; the head's objective is applied to
every target frame (``head.batch_multiplier`` noise draws per frame) and a BCE end-of-speech loss
to every frame plus the first one after the end. AdamW with warm-up + cosine, gradient clipping,
EMA weights (validated, sampled and exported), and the same non-finite guard as stage 1.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from pockettts.data.examples import TeacherBatch
from pockettts.models.bundle import read_export, write_export
from pockettts.models.flow_lm import FlowLM
from pockettts.models.text_alignment import (
    MIN_FRAMES,
    attention_inputs,
    guided_attention_loss,
    rows_onto_text,
)
from pockettts.training.ema import EMA, EMAWeightsMixin
from pockettts.training.guard import NonFiniteGuard
from pockettts.training.optimization import GuardedOptimizationMixin
from pockettts.training.text_progress import TextProgressMixin

log = logging.getLogger(__name__)


class TeacherTrainingModule(TextProgressMixin, GuardedOptimizationMixin, EMAWeightsMixin, L.LightningModule):
    """Trains ``model`` (a ``FlowLM``) on ``TeacherDataModule`` batches.

    Args:
        model: the backbone with its head.
        optimizer: ``params -> Optimizer`` factory (AdamW in the presets).
        lr_schedule: ``WarmupCosine`` options (``total_steps`` defaults to ``max_steps``).
        eos_loss_weight: weight of the end-of-speech BCE (0.1 in Kyutai's recipe).
        text_dropout, voice_dropout: CFG dropout probabilities per row (removed, not zeroed).
        grad_clip: max gradient norm.
        ema_decay: EMA of the weights (``None``: export raw weights).
        init_from: an exported FlowLM to start from (weights only). A tokenizer of another size
            re-initialises the text embedding (new language); other shape mismatches are errors.
        grow_layers: ``init_from`` a shallower FlowLM: its layers spread over this depth, the
            added ones start as identity blocks (``grown_layers``), so training resumes from the
            source's function with more capacity.
        init_fresh: parts of the model that keep their own initialisation rather than
            ``init_from``'s weights (state-dict prefixes, e.g. ``[head]`` to train a head of another
            kind on a trained backbone, ``[short_context]`` to add CALM's short-context transformer).
        latent_stats: ``"cache"`` starts the latent normalisation from the training cache's
            statistics (frozen); ``"ema"`` learns them from batches (Kyutai's recipe).
        guided_attention: ``None`` (Pocket TTS), or ``{weight, sigma, layers, heads}``: an added
            loss pulling the first ``heads`` heads of ``layers`` (default: the middle layer) toward a
            diagonal over the text (``models.text_alignment.guided_attention_loss``, logged as
            ``train/guide``); a training aid for small corpora, not part of the paper's recipe.
        export_path: where ``on_train_end`` writes the exported FlowLM (+ tokenizer beside it).
        seed: the global RNG is re-seeded from ``(seed, step, rank)`` before every step, so CFG
            dropout, context noise and the head's draws of a resumed run match an uninterrupted one.
    """

    checkpoint_key = "teacher_training"

    def __init__(
        self,
        model: FlowLM,
        optimizer: Callable[..., torch.optim.Optimizer],
        lr_schedule: dict[str, Any] | None = None,
        eos_loss_weight: float = 0.1,
        text_dropout: float = 0.2,
        voice_dropout: float = 0.2,
        grad_clip: float = 1.0,
        ema_decay: float | None = 0.999,
        max_bad_steps: int = 20,
        init_from: str | None = None,
        grow_layers: bool = False,
        init_fresh: Sequence[str] = (),
        latent_stats: str = "cache",
        guided_attention: dict[str, Any] | None = None,
        export_path: str | None = None,
        seed: int = 0,
    ):
        super().__init__()
        if latent_stats not in ("cache", "ema"):
            raise ValueError(f"latent_stats must be 'cache' or 'ema', got {latent_stats!r}")
        self.guided_attention = _guided_attention_options(guided_attention, model)
        self.automatic_optimization = False
        self.model = model
        if init_from:
            load_weights(self.model, init_from, grow_layers, init_fresh)
        elif init_fresh:
            raise ValueError("init_fresh names parts kept fresh from init_from's weights: set init_from")
        self.optimizer_factory = optimizer
        self.lr_schedule = dict(lr_schedule or {})
        self.eos_loss_weight = eos_loss_weight
        self.text_dropout = text_dropout
        self.voice_dropout = voice_dropout
        self.grad_clip = grad_clip
        self.ema = EMA(self.model, ema_decay) if ema_decay else None
        self.guard = NonFiniteGuard(max_bad_steps)
        self.latent_stats = latent_stats
        self.export_path = export_path
        self.seed = seed

    # -- setup ---------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if self.ema is not None:
            self.ema.to(self.device)
        datamodule = getattr(self.trainer, "datamodule", None)
        tokenizer = getattr(datamodule, "tokenizer", None)
        if tokenizer is not None and tokenizer.vocab_size != self.model.vocab_size:
            raise ValueError(
                f"the tokenizer {datamodule.tokenizer_path} has {tokenizer.vocab_size} pieces but the "
                f"model's text embedding expects {self.model.vocab_size}: set "
                f"model.model.vocab_size={tokenizer.vocab_size}"
            )
        fresh = int(self.model.stats_updates) == 0
        if stage == "fit" and self.latent_stats == "cache" and fresh and datamodule is not None:
            stats = datamodule.cache.stats()
            self.model.set_latent_statistics(stats["mean"].to(self.device), stats["std"].to(self.device))
            log.info("latent normalisation from the cache statistics of %s", datamodule.cache.cache_dir)

    # -- losses --------------------------------------------------------------------------------------
    def losses(
        self, batch: TeacherBatch, dropout: bool, without_text: bool = False, guide: bool = False
    ) -> dict[str, torch.Tensor]:
        """Training losses; ``dropout``: CFG dropout of voice and text per row; ``without_text``: every
        row's text removed (what the model predicts from voice and audio alone); ``guide``: add the
        guided-attention term when configured (training steps only, so validation losses compare
        across settings)."""
        drop_voice = drop_text = None
        if dropout:
            drop_voice = torch.rand(batch.size, device=self.device) < self.voice_dropout
            drop_text = torch.rand(batch.size, device=self.device) < self.text_dropout
        if without_text:
            drop_text = torch.ones(batch.size, dtype=torch.bool, device=self.device)
        guided = self.guided_attention if guide else None
        with attention_inputs(self.model, guided["layers"] if guided else ()) as inputs:
            out = teacher_forced(self.model, batch, drop_voice, drop_text)
        head_loss, terms = self.model.head_loss(out)
        valid = out["valid"]
        positions = torch.arange(valid.shape[1], device=valid.device)[None, :]
        is_end = (positions == batch.target_lengths[:, None]).float()
        eos = F.binary_cross_entropy_with_logits(out["eos_logits"][valid].float(), is_end[valid])
        with torch.no_grad():
            eos_accuracy = ((out["eos_logits"][valid] > 0).float() == is_end[valid]).float().mean()
        losses = {
            "loss": head_loss + self.eos_loss_weight * eos,
            "head": head_loss,
            "eos": eos,
            "eos_accuracy": eos_accuracy,
            **{f"head/{name}": value for name, value in terms.items()},
        }
        if guided:
            # The lengths the forward saw: a dropped voice or text is absent from the sequence.
            voice_lengths = _unless_dropped(batch.voice_lengths, drop_voice)
            text_lengths = _unless_dropped(batch.text_lengths, drop_text)
            rows = rows_onto_text(self.model, inputs, voice_lengths, text_lengths, batch.target_lengths)
            offs = [
                guided_attention_loss(row[:, : guided["heads"]], guided["sigma"])
                for row, tokens in zip(rows, text_lengths)
                if tokens > 0 and row.shape[-2] >= MIN_FRAMES - 1
            ]
            losses["guide"] = torch.stack(offs).mean() if offs else head_loss.new_zeros(())
            losses["loss"] = losses["loss"] + guided["weight"] * losses["guide"]
        return losses

    # -- steps ---------------------------------------------------------------------------------------
    def training_step(self, batch: TeacherBatch, batch_idx: int) -> None:
        self.seed_step()
        losses = self.losses(batch, dropout=True, guide=True)
        self.guarded_step(losses["loss"])
        size = batch.size
        self.log_dict(
            {f"train/{k}": v.detach().float() for k, v in losses.items()}, on_step=True, batch_size=size
        )
        self.log("train/skipped_steps", float(self.guard.skipped), on_step=True)
        self.log("loss", losses["loss"].detach(), prog_bar=True, logger=False, batch_size=size)

    def validation_step(self, batch: TeacherBatch, batch_idx: int) -> None:
        """Validation losses, and ``val/text_gain``: how much the head loss rises when the text is
        removed (≈ 0 on held-out sentences: new text is not read; the loss can fall from voice and audio
        context alone; ``pockettts.eval.text_gain`` compares training and held-out sentences).
        Both passes draw the head's noise and times from the same seed, so the gap is not sampling noise."""
        losses = self.validation_losses(batch, batch_idx, without_text=False)
        without_text = self.validation_losses(batch, batch_idx, without_text=True)
        metrics = {f"val/{k}": v.float() for k, v in losses.items() if not k.startswith("head/")}
        metrics["val/text_gain"] = (without_text["head"] - losses["head"]).float()
        self.log_dict(metrics, batch_size=batch.size, sync_dist=True)
        self.accumulate_text_progress(batch)

    def validation_losses(
        self, batch: TeacherBatch, batch_idx: int, without_text: bool
    ) -> dict[str, torch.Tensor]:
        """``losses`` with random draws seeded by (run seed, batch index); the global RNG is untouched."""
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed + batch_idx)
            return self.losses(batch, dropout=False, without_text=without_text)

    # -- checkpoints and export ----------------------------------------------------------------------
    def export(self, path: str | Path) -> Path:
        """Write the exported FlowLM (EMA weights) and, beside it, the tokenizer and codec it needs."""
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        with self.exported_weights() as model:
            return export_flow_lm(model, path, datamodule, step=self.global_step, ema=self.ema is not None)

    def on_train_end(self) -> None:
        if self.export_path and self.trainer.is_global_zero:
            log.info("exported FlowLM to %s", self.export(self.export_path))


def teacher_forced(
    model: FlowLM,
    batch: TeacherBatch,
    drop_voice: torch.Tensor | None = None,
    drop_text: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """``model``'s teacher-forced pass over ``batch`` (``FlowLM.forward``; ``drop_*`` ``[B]`` bool)."""
    return model(
        batch.voice, batch.voice_lengths, batch.text, batch.text_lengths, batch.target, batch.target_lengths,
        drop_voice=drop_voice, drop_text=drop_text,
    )  # fmt: skip


def _unless_dropped(lengths: torch.Tensor, dropped: torch.Tensor | None) -> torch.Tensor:
    return lengths if dropped is None else lengths.masked_fill(dropped, 0)


def _guided_attention_options(options: dict[str, Any] | None, model: FlowLM) -> dict[str, Any] | None:
    """Checked ``guided_attention`` options with their defaults, or ``None``."""
    if not options:
        return None
    unknown = set(options) - {"weight", "sigma", "layers", "heads"}
    if unknown:
        raise ValueError(f"unknown guided_attention options {sorted(unknown)}: weight, sigma, layers, heads")
    num_layers = len(model.transformer.layers)
    num_heads = model.transformer.layers[0].self_attn.num_heads
    layers = list(options.get("layers") or [num_layers // 2])
    heads = int(options.get("heads") or num_heads)
    if not all(0 <= i < num_layers for i in layers) or not 0 < heads <= num_heads:
        raise ValueError(
            f"guided_attention layers {layers} / heads {heads} do not fit a model of {num_layers} layers "
            f"of {num_heads} heads"
        )
    return {"weight": float(options.get("weight", 1.0)), "sigma": float(options.get("sigma", 0.2)),
            "layers": layers, "heads": heads}  # fmt: skip


def export_flow_lm(
    model: FlowLM, path: str | Path, datamodule=None, step: int | None = None, ema: bool | None = None
) -> Path:
    """``write_export`` of a trained model with the datamodule's tokenizer and VAE (when there is a
    datamodule), the training ``step`` and whether the weights are the ``ema`` ones."""
    if datamodule is None:
        return write_export(model, path, step=step, ema=ema)
    return write_export(model, path, datamodule.tokenizer_path, datamodule.vae, step, ema)


LAYERS = "transformer.layers."
# Written into a residual stream: zeroed, a pre-norm layer adds nothing (an identity block).
RESIDUAL_OUTPUTS = ("self_attn.out_proj.weight", "linear2.weight")


def load_weights(
    model: FlowLM, path: str | Path, grow_layers: bool = False, init_fresh: Sequence[str] = ()
) -> None:
    """``init_from``: copy an exported FlowLM's weights into ``model``; a text embedding of another
    vocabulary size is re-initialised (fine-tuning with a new tokenizer), any other mismatch is an error.
    ``grow_layers``: ``path`` may have fewer transformer layers than ``model`` (``grown_layers``).
    ``init_fresh``: state-dict prefixes (``head``, ``short_context``) that keep ``model``'s own
    initialisation; each must name a part of ``model``."""
    loaded = read_export(path).flow_lm
    source = loaded.state_dict()
    own = model.state_dict()
    fresh_prefixes = tuple(f"{name.rstrip('.')}." for name in init_fresh)
    unknown = [
        name for name, prefix in zip(init_fresh, fresh_prefixes) if not any(k.startswith(prefix) for k in own)
    ]
    if unknown:
        parts = sorted({key.split(".")[0] for key in own})
        raise ValueError(f"init_fresh: the model has no part {unknown}; its parts: {parts}")
    source = {key: value for key, value in source.items() if not key.startswith(fresh_prefixes)}
    source.update({key: value for key, value in own.items() if key.startswith(fresh_prefixes)})
    if fresh_prefixes:
        log.info("%s: %s keep their fresh initialisation", path, ", ".join(init_fresh))
    if grow_layers:
        source = grown_layers(source, len(loaded.transformer.layers), len(model.transformer.layers))
    embedding = "conditioner.embed.weight"
    if source[embedding].shape != own[embedding].shape:
        log.warning(
            "%s: text embedding %s -> %s (new tokenizer): re-initialised",
            path, tuple(source[embedding].shape), tuple(own[embedding].shape),
        )  # fmt: skip
        source[embedding] = own[embedding]
    mismatched = [k for k in own if k in source and source[k].shape != own[k].shape]
    missing = [k for k in own if k not in source]
    if mismatched or missing:
        raise ValueError(
            f"{path} does not fit the model: shapes differ for {mismatched[:5]}, missing {missing[:5]}"
        )
    model.load_state_dict(source, strict=False)


def grown_layers(source: dict[str, torch.Tensor], depth: int, num_layers: int) -> dict[str, torch.Tensor]:
    """A FlowLM state dict of ``depth`` transformer layers deepened to ``num_layers`` (progressive stacking).

    The source's layers keep their order, spread evenly over the new depth; each added layer is a
    copy of the one below it with its residual outputs zeroed, so at step 0 it is an identity block
    and the grown model computes exactly what the source did, while its input weights give the new
    layers useful gradients from the first step.
    """
    if num_layers < depth:
        raise ValueError(f"cannot grow {depth} transformer layers into {num_layers}")
    grown = {key: value for key, value in source.items() if not key.startswith(LAYERS)}
    placed = {index * num_layers // depth: index for index in range(depth)}
    below = 0
    for position in range(num_layers):
        added = position not in placed
        below = placed.get(position, below)
        prefix = f"{LAYERS}{below}."
        for key, value in source.items():
            if key.startswith(prefix):
                name = key[len(prefix) :]
                zeroed = added and name in RESIDUAL_OUTPUTS
                grown[f"{LAYERS}{position}.{name}"] = torch.zeros_like(value) if zeroed else value.clone()
    return grown
