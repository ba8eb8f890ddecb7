"""The causal audio VAE: 24 kHz waveform <-> 32-d continuous latents at 12.5 Hz (Pocket TTS's codec).

Encoder: SEANet (200 Hz) -> transformer -> ``downsample`` (causal conv, stride 16) -> latent mean;
the ``quantizer`` holds the Gaussian bottleneck (log-variance, used in training only) and the
latent -> decoder projection. Decoder: ``upsample`` (depthwise transposed conv) -> transformer ->
SEANet. Everything is causal and streams with explicit state (``pockettts.modules.streaming``); the
module names match the released codec so its weights convert with ``pockettts.compat.mimi``.

Two released layouts exist: v2 (``inner_dim == latent_dim``, the downsample conv outputs the latent)
and v1 (``inner_dim == dimension``, a 1x1 ``quantizer.input_proj`` maps the downsampled features to
the latent).
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn.utils import parametrize

from pockettts.devices import resolve_device
from pockettts.io import atomic_write, atomic_write_text
from pockettts.modules.conv import StreamingConv1d, StreamingConvTranspose1d, folded_state_dict
from pockettts.modules.seanet import SEANetDecoder, SEANetEncoder
from pockettts.modules.streaming import State, StreamingModule, child_state
from pockettts.modules.transformer import ProjectedTransformer

# The released codec (pocket_tts/config/english.yaml, `mimi` section).
SEANET_DEFAULTS: dict[str, Any] = dict(
    channels=1, dimension=512, n_filters=64, n_residual_layers=1, ratios=[6, 5, 4], kernel_size=7,
    last_kernel_size=3, residual_kernel_size=3, dilation_base=2, compress=2, pad_mode="constant",
)  # fmt: skip
TRANSFORMER_DEFAULTS: dict[str, Any] = dict(
    d_model=512, num_heads=8, num_layers=2, dim_feedforward=2048, context=250, max_period=10_000.0,
    layer_scale=0.01,
)  # fmt: skip


# The modules that turn latents into audio; everything else shapes the latents.
DECODER_SIDE = ("quantizer.output_proj", "upsample", "decoder_transformer", "decoder")


# The config entries that shape the latents (the decoder's own sizes do not).
ENCODER_CONFIG = ("sample_rate", "frame_rate", "latent_dim", "inner_dim", "seanet", "transformer")


def _on_decoder_side(name: str) -> bool:
    return any(name.startswith(module + ".") for module in DECODER_SIDE)


class GaussianBottleneck(nn.Module):
    """Diagonal Gaussian posterior over the latent, and the latent -> decoder projection.

    ``logvar = logvar_proj(mean) + logvar_param`` (the released checkpoints carry exactly these two
    tensors); it starts strongly negative so sampling noise cannot swamp a young encoder.
    """

    def __init__(self, latent_dim: int, inner_dim: int, output_dimension: int, logvar_init: float = -6.0):
        super().__init__()
        self.input_proj = None if inner_dim == latent_dim else nn.Conv1d(inner_dim, latent_dim, 1, bias=False)
        self.logvar_proj = nn.Conv1d(latent_dim, latent_dim, 1, bias=False)
        nn.init.zeros_(self.logvar_proj.weight)
        self.logvar_param = nn.Parameter(torch.full((latent_dim,), float(logvar_init)))
        self.output_proj = nn.Conv1d(latent_dim, output_dimension, 1, bias=False)
        # False for a released v1 codec, whose files do not carry ``input_proj`` (see compat.mimi).
        self.input_proj_loaded = True

    def mean(self, features: torch.Tensor) -> torch.Tensor:
        """``[B, inner_dim, F]`` -> latent mean ``[B, latent_dim, F]``."""
        if self.input_proj is None:
            return features
        if not self.input_proj_loaded:
            raise RuntimeError(
                "this codec (a released v1 file) ships no 512 -> latent projection: it decodes latents "
                "and encodes voice prompts (voice_features), but cannot encode latents"
            )
        return self.input_proj(features)

    def logvar(self, mean: torch.Tensor) -> torch.Tensor:
        """``[B, latent_dim, F]`` -> log-variance, clamped to keep ``exp`` finite."""
        return (self.logvar_proj(mean) + self.logvar_param[:, None]).clamp(-20.0, 5.0)


class AudioVAE(StreamingModule):
    """Causal VAE: ``encode`` ``[B, 1, T]`` -> ``[B, F, latent_dim]``, ``decode`` back to audio.

    Pass ``state=model.init_state(B)`` to ``encode``/``decode`` to stream (one state can serve an
    encoding and a decoding stream at once: they use disjoint modules).
    """

    def __init__(
        self,
        sample_rate: int = 24_000,
        frame_rate: float = 12.5,
        latent_dim: int = 32,
        inner_dim: int | None = None,
        seanet: dict[str, Any] | None = None,
        transformer: dict[str, Any] | None = None,
        decoder_seanet: dict[str, Any] | None = None,
        decoder_transformer: dict[str, Any] | None = None,
        weight_norm: bool = True,
        logvar_init: float = -6.0,
    ):
        super().__init__()
        seanet = {**SEANET_DEFAULTS, **(seanet or {})}
        transformer = {**TRANSFORMER_DEFAULTS, **(transformer or {})}
        # The decoder side may be smaller than the encoder (the released 2M/7M/18M-decoder codecs).
        decoder_seanet = {**seanet, **(decoder_seanet or {})}
        decoder_transformer = {**transformer, **(decoder_transformer or {})}
        inner_dim = latent_dim if inner_dim is None else inner_dim
        # Everything needed to rebuild this model; written next to exported weights.
        self.config: dict[str, Any] = copy.deepcopy(dict(
            sample_rate=sample_rate, frame_rate=frame_rate, latent_dim=latent_dim, inner_dim=inner_dim,
            seanet=seanet, transformer=transformer, decoder_seanet=decoder_seanet,
            decoder_transformer=decoder_transformer, weight_norm=weight_norm, logvar_init=logvar_init,
        ))  # fmt: skip
        self.sample_rate = sample_rate
        self.frame_rate = frame_rate
        self.latent_dim = latent_dim
        self.frame_size = round(sample_rate / frame_rate)
        self.encoder = SEANetEncoder(**seanet, weight_norm=weight_norm)
        self.decoder = SEANetDecoder(**decoder_seanet, weight_norm=weight_norm)
        stride, remainder = divmod(self.frame_size, self.encoder.hop_length)
        if remainder or abs(stride * self.encoder.hop_length - sample_rate / frame_rate) > 1e-6:
            raise ValueError(
                f"frame size {sample_rate / frame_rate} samples is not a multiple of the SEANet hop "
                f"{self.encoder.hop_length} (ratios {seanet['ratios']})"
            )
        if decoder_seanet["ratios"] != seanet["ratios"]:
            raise ValueError("the decoder's SEANet ratios must mirror the encoder's")
        dimension, decoder_dimension = seanet["dimension"], decoder_seanet["dimension"]
        self.encoder_transformer = ProjectedTransformer(dimension, dimension, **transformer)
        self.decoder_transformer = ProjectedTransformer(
            decoder_dimension, decoder_dimension, **decoder_transformer
        )
        self.downsample = ConvDownsample1d(stride, dimension, inner_dim)
        self.upsample = ConvTrUpsample1d(stride, decoder_dimension)
        self.quantizer = GaussianBottleneck(latent_dim, inner_dim, decoder_dimension, logvar_init)

    # -- encoder side -------------------------------------------------------------------------
    def encode_mean(self, audio: torch.Tensor, state: State | None = None) -> torch.Tensor:
        """``audio`` ``[B, 1, T]`` -> posterior mean ``[B, latent_dim, F]``.

        A full pass zero-pads ``T`` up to a whole number of frames; a stream emits a frame as soon
        as its ``frame_size`` samples have arrived (``F`` may be 0 for a short chunk).
        """
        features = self.encode_features(audio, state)
        if features.shape[-1] == 0:
            return features.new_zeros(features.shape[0], self.latent_dim, 0)
        return self.quantizer.mean(features)

    def encode_features(self, audio: torch.Tensor, state: State | None = None) -> torch.Tensor:
        """``audio`` ``[B, 1, T]`` -> downsampled encoder features ``[B, inner_dim, F]`` (the latent mean
        itself when ``inner_dim == latent_dim``, v2; the bottleneck's input in v1)."""
        if audio.dim() != 3 or audio.shape[1] != 1:
            raise ValueError(f"expected mono audio [B, 1, T], got shape {tuple(audio.shape)}")
        if state is None:
            audio = nn.functional.pad(audio, (0, -audio.shape[-1] % self.frame_size))
        features = self.encoder(audio, child_state(state, "encoder"))
        if features.shape[-1] == 0:
            return features.new_zeros(features.shape[0], self.inner_dim, 0)
        features = self.encoder_transformer(features, child_state(state, "encoder_transformer"))
        return self.downsample(features, child_state(state, "downsample"))

    def voice_features(self, audio: torch.Tensor, voice_dim: int) -> torch.Tensor:
        """What a FlowLM whose voice projection reads ``voice_dim`` features gets from a prompt
        ``[B, 1, T]``: ``[B, F, voice_dim]``, the latents (v2) or the encoder features (v1, 512-d)."""
        if voice_dim == self.latent_dim:
            return self.encode(audio)
        if voice_dim == self.inner_dim:
            return self.encode_features(audio).transpose(1, 2)
        raise ValueError(
            f"the codec gives {self.latent_dim}- or {self.inner_dim}-d voice features, "
            f"the model reads {voice_dim}"
        )

    @property
    def inner_dim(self) -> int:
        return self.downsample.conv.conv.out_channels

    def encode_distribution(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training-time posterior ``(mean, logvar)``, each ``[B, latent_dim, F]``."""
        mean = self.encode_mean(audio)
        return mean, self.quantizer.logvar(mean)

    def encode(self, audio: torch.Tensor, state: State | None = None) -> torch.Tensor:
        """The deterministic latent (posterior mean): ``[B, 1, T]`` -> ``[B, F, latent_dim]``."""
        return self.encode_mean(audio, state).transpose(1, 2)

    def encoder_parameters(self) -> list[nn.Parameter]:
        """Every parameter that shapes the latents (all but the decoder side): what a decoder-only
        fine-tune freezes so that latents cached for, and backbones trained on, this codec stay valid."""
        decoder_ids = {id(p) for name in DECODER_SIDE for p in self.get_submodule(name).parameters()}
        return [p for p in self.parameters() if id(p) not in decoder_ids]

    def drop_encoder_weight_norm(self) -> None:
        """Plain weights instead of weight norm on the encoder side, for an encoder that stays frozen:
        a weight-normalised conv reproduces a loaded weight only up to rounding, plain ones load
        and export bit for bit, so a decoder-only fine-tune keeps its source's latent hash."""
        normalised = [
            module
            for name, module in self.named_modules()
            if not _on_decoder_side(name + ".") and parametrize.is_parametrized(module, "weight")
        ]
        for module in normalised:
            parametrize.remove_parametrizations(module, "weight")

    # -- decoder side -------------------------------------------------------------------------
    def decode_features(self, latent: torch.Tensor, state: State | None = None) -> torch.Tensor:
        """Conv-layout latent ``[B, latent_dim, F]`` -> waveform ``[B, 1, F * frame_size]``."""
        if latent.shape[-1] == 0:
            return latent.new_zeros(latent.shape[0], 1, 0)
        features = self.upsample(self.quantizer.output_proj(latent), child_state(state, "upsample"))
        features = self.decoder_transformer(features, child_state(state, "decoder_transformer"))
        return self.decoder(features, child_state(state, "decoder"))

    def decode(self, latent: torch.Tensor, state: State | None = None) -> torch.Tensor:
        """``[B, F, latent_dim]`` -> waveform ``[B, 1, F * frame_size]``."""
        if latent.dim() != 3 or latent.shape[-1] != self.latent_dim:
            raise ValueError(f"expected latents [B, F, {self.latent_dim}], got shape {tuple(latent.shape)}")
        return self.decode_features(latent.transpose(1, 2), state)

    def forward(
        self, audio: torch.Tensor, sample: bool = True, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """Training pass: ``audio`` ``[B, 1, T]`` -> reconstruction ``[B, 1, T']`` (``T'`` = ``T`` rounded up
        to whole frames), posterior ``mean``/``logvar`` ``[B, latent_dim, F]`` and the decoded ``latent``."""
        mean, logvar = self.encode_distribution(audio)
        if sample:
            noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
            latent = mean + noise * (0.5 * logvar).exp()
        else:
            latent = mean
        return {
            "reconstruction": self.decode_features(latent),
            "mean": mean,
            "logvar": logvar,
            "latent": latent,
        }

    # -- export / load ------------------------------------------------------------------------
    def inference_state_dict(self) -> dict[str, torch.Tensor]:
        """Weights with weight norm folded in (the layout ``load_vae`` reads)."""
        return {k: v.detach().contiguous().cpu() for k, v in folded_state_dict(self).items()}

    def load_inference_state_dict(
        self, tensors: dict[str, torch.Tensor], strict: bool = True, encoder_only: bool = False
    ) -> None:
        """Load folded weights (``inference_state_dict`` layout) into this model, weight norm or not.

        For a weight-normalised conv, ``w`` becomes ``g = ||w||`` (per output row) and ``v = w``,
        which reproduces ``w`` up to rounding: a released codec can be fine-tuned as it was trained.
        ``encoder_only`` loads the encoder side alone (the decoder side may have another size): the
        latents are then the source codec's, the decoder stays as initialised.
        """
        if encoder_only:
            tensors = {k: v for k, v in tensors.items() if not _on_decoder_side(k)}
        own = self.state_dict()
        mapped: dict[str, torch.Tensor] = {}
        for name, tensor in tensors.items():
            stem = name.removesuffix(".weight")
            if name not in own and f"{stem}.parametrizations.weight.original1" in own:
                norm_dims = tuple(range(1, tensor.dim()))
                mapped[f"{stem}.parametrizations.weight.original0"] = tensor.norm(dim=norm_dims, keepdim=True)
                mapped[f"{stem}.parametrizations.weight.original1"] = tensor
            else:
                mapped[name] = tensor
        missing, unexpected = self.load_state_dict(mapped, strict=False)
        if encoder_only:
            missing = [k for k in missing if not _on_decoder_side(k)]
        if strict and (missing or unexpected):
            raise KeyError(f"VAE weights do not fit: missing {missing[:6]}, unexpected {unexpected[:6]}")

    def save(self, path: str | Path) -> Path:
        """Write ``<path>`` (safetensors, config in its metadata) and ``<path>.json`` (the config)."""
        path = Path(path)
        config = {**self.config, "weight_norm": False}
        tensors = self.inference_state_dict()
        metadata = {
            "format": "pockettts.vae",
            "config": json.dumps(config),
            "latent_sha1": latent_space_hash(tensors, config),
        }
        atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
        atomic_write_text(path.with_suffix(".json"), json.dumps(config, indent=2) + "\n")
        return path


def weights_hash(tensors: dict[str, torch.Tensor]) -> str:
    """A content hash of a state dict (names, shapes, dtypes, values): keys latent caches to weights."""
    digest = hashlib.sha1()
    for name in sorted(tensors):
        tensor = tensors[name].detach().contiguous().cpu()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def latent_space_hash(tensors: dict[str, torch.Tensor], config: dict[str, Any]) -> str:
    """A content hash of what a codec's latents depend on: the encoder side's weights and config.

    Codecs that differ only in their decoder (a decoder-only fine-tune, a wider decoder trained on
    frozen latents) share it, and so share latent caches and the backbones trained on them.
    """
    encoder_config = json.dumps({k: config[k] for k in ENCODER_CONFIG}, sort_keys=True)
    encoder_side = {k: v for k, v in tensors.items() if not _on_decoder_side(k)}
    return hashlib.sha1(f"{encoder_config}:{weights_hash(encoder_side)}".encode()).hexdigest()


def vae_latent_hash(vae_path: str | Path) -> str:
    """``latent_space_hash`` of an exported VAE: read from its metadata, computed if absent."""
    metadata = _vae_metadata(vae_path)
    if "latent_sha1" in metadata:
        return metadata["latent_sha1"]
    return latent_space_hash(load_file(str(vae_path)), json.loads(metadata["config"]))


def _vae_metadata(path: str | Path) -> dict[str, str]:
    """An exported VAE's safetensors metadata; a clear error for anything else."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"VAE checkpoint {path} does not exist")
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if metadata.get("format") != "pockettts.vae" or "config" not in metadata:
        raise ValueError(
            f"{path} is not an exported pockettts VAE (no config in its metadata); released Pocket TTS "
            "codec weights convert with `pockettts-tools import-kyutai --codec`"
        )
    return metadata


def load_vae(path: str | Path, device: str | torch.device = "cpu") -> AudioVAE:
    """Rebuild an exported VAE (``AudioVAE.save``) in eval mode on ``device``
    (``pockettts.devices.resolve_device``); the weights are read on the CPU, then moved."""
    device = resolve_device(device)
    model = AudioVAE(**json.loads(_vae_metadata(path)["config"]))
    model.load_inference_state_dict(load_file(str(path), device="cpu"))
    return model.to(device).eval()


class ConvDownsample1d(StreamingModule):
    """Causal strided conv (kernel ``2 * stride``, no bias, replicate padding).

    ``[B, C, T]`` -> ``[B, C_out, T // stride]``.
    """

    def __init__(self, stride: int, dimension: int, out_dimension: int):
        super().__init__()
        self.conv = StreamingConv1d(
            dimension, out_dimension, 2 * stride, stride, bias=False, pad_mode="replicate"
        )

    def forward(self, x: torch.Tensor, state: State | None = None) -> torch.Tensor:
        return self.conv(x, child_state(state, "conv"))


class ConvTrUpsample1d(StreamingModule):
    """Depthwise causal transposed conv (kernel ``2 * stride``, no bias).

    ``[B, C, F]`` -> ``[B, C, F * stride]``.
    """

    def __init__(self, stride: int, dimension: int):
        super().__init__()
        self.convtr = StreamingConvTranspose1d(
            dimension, dimension, 2 * stride, stride, groups=dimension, bias=False
        )

    def forward(self, x: torch.Tensor, state: State | None = None) -> torch.Tensor:
        return self.convtr(x, child_state(state, "convtr"))
