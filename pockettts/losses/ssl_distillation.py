"""Distil self-supervised speech features (WavLM) into the VAE latent.

Pocket TTS trains its codec so that a linear projection of the whole 32-d latent matches WavLM
features under a cosine loss (weight 25 in the paper), which makes the latent carry phonetic content
that the TTS model can then predict. Two pieces:

- :func:`load_ssl_teacher` builds a torchaudio WavLM and loads its weights from a LOCAL file (training
  machines may have no network), wrapped in a frozen :class:`SSLFeatureTeacher`.
- :class:`LatentFeatureDistillation` holds the trainable projection and computes the loss.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchaudio
from torch import Tensor, nn

SSL_SAMPLE_RATE = 16_000
SSL_ARCHITECTURES = ("wavlm_base", "wavlm_base_plus", "wavlm_large", "custom")
# torchaudio bundles that wrap the model to layer-normalise the waveform (WAVLM_LARGE) save their
# state dict under this prefix.
_WRAPPED_PREFIX = "model."


class SSLFeatureTeacher(nn.Module):
    """A frozen SSL model that maps 24 kHz audio to the hidden states of one transformer layer.

    ``forward(audio [B, 1, T] at input_sample_rate) -> features [B, T_ssl, C]`` (about 50 frames per
    second for WavLM). Parameters never require grad and the module stays in eval mode even when a
    parent calls ``.train()``, so dropout and layer drop never perturb the targets.
    """

    def __init__(
        self,
        model: nn.Module,
        layer: int,
        input_sample_rate: int = 24_000,
        normalize_waveform: bool = False,
    ):
        super().__init__()
        self.model = model
        self.layer = layer
        self.input_sample_rate = input_sample_rate
        self.normalize_waveform = normalize_waveform
        self.requires_grad_(False)
        self.eval()

    @property
    def feature_dim(self) -> int:
        """Width ``C`` of the returned features (the transformer's embedding size)."""
        return self.model.encoder.feature_projection.projection.out_features

    def train(self, mode: bool = True) -> SSLFeatureTeacher:
        # A frozen teacher: ignore requests to enter training mode.
        return super().train(False)

    @torch.no_grad()
    def forward(self, audio: Tensor) -> Tensor:
        if audio.dim() != 3 or audio.shape[1] != 1:
            raise ValueError(f"SSL teacher expects mono audio shaped [B, 1, T], got {tuple(audio.shape)}")
        waveform = audio.squeeze(1).float()
        if self.input_sample_rate != SSL_SAMPLE_RATE:
            waveform = torchaudio.functional.resample(waveform, self.input_sample_rate, SSL_SAMPLE_RATE)
        if self.normalize_waveform:
            waveform = F.layer_norm(waveform, waveform.shape[-1:])
        # num_layers stops the encoder after the requested layer instead of running all of them.
        hidden_states, _ = self.model.extract_features(waveform, num_layers=self.layer)
        return hidden_states[self.layer - 1].float()


def _build_model(architecture: str, model_kwargs: dict[str, Any]) -> nn.Module:
    builders = torchaudio.models
    if architecture in ("wavlm_base", "wavlm_base_plus"):  # Base+ has the Base architecture
        return builders.wavlm_base(**model_kwargs)
    if architecture == "wavlm_large":
        return builders.wavlm_large(**model_kwargs)
    if architecture == "custom":
        return builders.wavlm_model(**model_kwargs)
    raise ValueError(f"unknown SSL architecture {architecture!r}; expected one of {SSL_ARCHITECTURES}")


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise FileNotFoundError(
            f"SSL teacher checkpoint not found: {path}. Make one on a machine with network access, e.g.\n"
            f'  python -c "import torch, torchaudio; torch.save('
            f"torchaudio.pipelines.WAVLM_BASE_PLUS.get_model().state_dict(), '{path}')\"\n"
            f"and copy it here."
        )
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not all(isinstance(v, Tensor) for v in loaded.values()):
        raise ValueError(
            f"SSL teacher checkpoint {path} is not a state dict (a mapping of names to tensors, "
            f"optionally under 'state_dict'); got {type(loaded).__name__}"
        )
    return loaded


def _matched_state_dict(model: nn.Module, state_dict: dict[str, Tensor], path: Path) -> dict[str, Tensor]:
    """Check keys and shapes against ``model``; raise an error that names what does not match."""
    expected = model.state_dict()
    if set(expected) != set(state_dict) and all(key.startswith(_WRAPPED_PREFIX) for key in state_dict):
        state_dict = {key[len(_WRAPPED_PREFIX) :]: value for key, value in state_dict.items()}
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = sorted(
        f"{key}: checkpoint {tuple(state_dict[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in set(expected) & set(state_dict)
        if state_dict[key].shape != expected[key].shape
    )
    if missing or unexpected or mismatched:

        def show(items: list[str]) -> str:
            return ", ".join(items[:8]) + (f", ... ({len(items)} in all)" if len(items) > 8 else "")

        problems = []
        if missing:
            problems.append(f"missing keys: {show(missing)}")
        if unexpected:
            problems.append(f"unexpected keys: {show(unexpected)}")
        if mismatched:
            problems.append(f"shape mismatches: {show(mismatched)}")
        raise ValueError(
            f"SSL teacher checkpoint {path} does not fit the requested architecture; is `architecture` "
            f"(or the custom model kwargs) right? " + "; ".join(problems)
        )
    return state_dict


def load_ssl_teacher(
    checkpoint: str | Path,
    architecture: str = "wavlm_base_plus",
    layer: int | None = None,
    input_sample_rate: int = 24_000,
    normalize_waveform: bool | None = None,
    **model_kwargs: Any,
) -> SSLFeatureTeacher:
    """Build a WavLM with torchaudio, load local weights, and return it frozen.

    Args:
        checkpoint: a file saved with ``torch.save(model.state_dict(), path)`` (a bare state dict or
            ``{"state_dict": ...}``); read with ``weights_only=True``.
        architecture: ``wavlm_base`` / ``wavlm_base_plus`` (same shapes), ``wavlm_large``, or ``custom``
            (``torchaudio.models.wavlm_model(**model_kwargs)``, e.g. a tiny model for tests).
        layer: 1-based transformer layer whose output is the target (``1`` = first layer's output);
            ``None`` = the last layer.
        input_sample_rate: sample rate of the audio given to the teacher; it is resampled to 16 kHz.
        normalize_waveform: layer-normalise each waveform first, as WavLM Large was trained;
            ``None`` = True for ``wavlm_large`` only.
        model_kwargs: passed to the torchaudio builder (e.g. dropout overrides, or all the arguments
            of ``wavlm_model`` for ``custom``).
    """
    path = Path(checkpoint).expanduser()
    if architecture not in SSL_ARCHITECTURES:
        raise ValueError(f"unknown SSL architecture {architecture!r}; expected one of {SSL_ARCHITECTURES}")
    state_dict = _read_state_dict(path)
    model = _build_model(architecture, model_kwargs)
    model.load_state_dict(_matched_state_dict(model, state_dict, path))
    num_layers = len(model.encoder.transformer.layers)
    layer = num_layers if layer is None else layer
    if not 1 <= layer <= num_layers:
        raise ValueError(f"layer {layer} is outside 1..{num_layers} for this {architecture} model")
    if normalize_waveform is None:
        normalize_waveform = architecture == "wavlm_large"
    return SSLFeatureTeacher(
        model, layer=layer, input_sample_rate=input_sample_rate, normalize_waveform=normalize_waveform
    )


class LatentFeatureDistillation(nn.Module):
    """Cosine distillation of SSL features into the latent through a bias-free linear projection.

    ``forward(latent [B, D, T], features [B, T_ssl, C]) -> scalar``: the features are average-pooled
    by ``feature_frame_rate / latent_frame_rate`` (4 for WavLM's 50 Hz onto a 12.5 Hz latent), both
    sequences are cropped to the shorter one, and the loss is the mean over frames of
    ``1 - cos(proj(latent), pooled_features)``. Only ``proj`` is trainable here; gradients also flow
    into the latent (i.e. the encoder), never into the features.
    """

    def __init__(
        self,
        latent_dim: int = 32,
        feature_dim: int = 768,
        latent_frame_rate: float = 12.5,
        feature_frame_rate: float = 50.0,
    ):
        super().__init__()
        ratio = feature_frame_rate / latent_frame_rate
        if ratio < 1 or abs(ratio - round(ratio)) > 1e-6:
            raise ValueError(
                f"feature_frame_rate / latent_frame_rate must be a whole number >= 1, got "
                f"{feature_frame_rate} / {latent_frame_rate} = {ratio:g}"
            )
        self.pool_factor = round(ratio)
        self.proj = nn.Conv1d(latent_dim, feature_dim, kernel_size=1, bias=False)

    def pool_features(self, features: Tensor) -> Tensor:
        """``[B, T_ssl, C]`` → ``[B, C, T_ssl // pool_factor]`` (a trailing partial window is dropped)."""
        features = features.detach().float().transpose(1, 2)
        if self.pool_factor == 1:
            return features
        return F.avg_pool1d(features, kernel_size=self.pool_factor, stride=self.pool_factor)

    def forward(self, latent: Tensor, features: Tensor, lengths_mask: Tensor | None = None) -> Tensor:
        """``lengths_mask``: optional ``[B, T]`` over latent frames; padded frames are left out."""
        if latent.dim() != 3 or features.dim() != 3:
            raise ValueError(
                f"expected latent [B, D, T] and features [B, T_ssl, C], got {tuple(latent.shape)} "
                f"and {tuple(features.shape)}"
            )
        if features.shape[-1] != self.proj.out_channels:
            raise ValueError(
                f"features have {features.shape[-1]} channels, expected {self.proj.out_channels}"
            )
        with torch.autocast(device_type=latent.device.type, enabled=False):
            projected = self.proj(latent.float())  # [B, C, T]
            targets = self.pool_features(features)  # [B, C, T_pooled]
            frames = min(projected.shape[-1], targets.shape[-1])
            if frames == 0:
                raise ValueError(
                    f"no overlapping frames: latent has {latent.shape[-1]}, pooled features "
                    f"{targets.shape[-1]} (audio too short for the SSL model?)"
                )
            cosine = F.cosine_similarity(projected[..., :frames], targets[..., :frames], dim=1)  # [B, T]
            loss = 1.0 - cosine
            if lengths_mask is None:
                return loss.mean()
            valid = lengths_mask[:, :frames].to(loss.dtype)
            return (loss * valid).sum() / valid.sum().clamp_min(1.0)
