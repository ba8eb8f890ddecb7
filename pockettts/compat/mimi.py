"""Convert between our ``AudioVAE`` and the released Pocket TTS codec ("mimi").

Two source layouts are read:
- the inference package layout: the ``mimi.*`` tensors of a ``kyutai/pocket-tts`` model file
  (plain ``.weight`` tensors, ``self_attn.in_proj.weight``, ``output_projs.0``);
- the training layout of Kyutai's codec checkpoints: ``model.`` prefix, weight-normalised convs
  (``weight_g``/``weight_v``), ``conv.conv``/``convtr.convtr`` nesting, ``in_proj_weight``, plus
  training-only heads (WavLM distillation, VQ) that the codec does not need.
``vae_to_mimi`` writes the package layout, so a VAE trained here runs in Kyutai's ecosystem.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import safe_open

from pockettts.compat import KyutaiLayoutError
from pockettts.models.vae import AudioVAE

log = logging.getLogger(__name__)

# Heads used only while Kyutai trained their codec (semantic distillation, the old RVQ).
_TRAINING_ONLY = ("wavlm_", "quantizer.vq.", "_codebook")
# Our bottleneck's training-time tensors, which released package files do not carry.
_OUR_TRAINING_ONLY = ("quantizer.logvar_proj.weight", "quantizer.logvar_param")
# The v1 layout's features -> latent projection: the package's codec has none (a v1 FlowLM reads
# the features themselves as voice prompts), so released files do not carry it either.
_V1_INPUT_PROJ = "quantizer.input_proj.weight"
# ``AudioVAE`` transformer options, all of which a Pocket TTS config spells out.
_TRANSFORMER_KEYS = (
    "d_model",
    "num_heads",
    "num_layers",
    "dim_feedforward",
    "context",
    "max_period",
    "layer_scale",
)


def _rename(name: str, training_layout: bool) -> str:
    if training_layout:  # one more wrapper level around every conv (Mimi's NormConv1d)
        name = name.removeprefix("model.")
        name = name.replace(".conv.conv.", ".conv.").replace(".convtr.convtr.", ".convtr.")
        name = name.replace(".self_attn.in_proj_weight", ".self_attn.in_proj.weight")
    return name.replace(".output_projs.0.", ".output_proj.")


def mimi_to_vae_state_dict(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Released codec tensors (either layout, ``mimi.`` prefix or not) -> ``AudioVAE`` folded layout."""
    if any(name.startswith("mimi.") for name in tensors):
        tensors = {k.removeprefix("mimi."): v for k, v in tensors.items() if k.startswith("mimi.")}
    training_layout = any(name.startswith("model.") or name.endswith(".weight_g") for name in tensors)
    converted: dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        if any(marker in name for marker in _TRAINING_ONLY) or name.endswith(".weight_v"):
            continue
        if name.endswith(".weight_g"):
            stem = name.removesuffix(".weight_g")
            tensor = torch._weight_norm(tensors[f"{stem}.weight_v"], tensor, dim=0)
            name = f"{stem}.weight"
        converted[_rename(name, training_layout)] = tensor
    return converted


def vae_to_mimi_state_dict(vae: AudioVAE, prefix: str = "mimi.") -> dict[str, torch.Tensor]:
    """Our VAE -> the package layout (weight norm folded, training-only bottleneck tensors and the v1
    latent projection dropped)."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in vae.inference_state_dict().items():
        if name in _OUR_TRAINING_ONLY or name == _V1_INPUT_PROJ:
            continue
        name = (
            name.replace(".output_proj.", ".output_projs.0.") if "transformer.output_proj" in name else name
        )
        out[f"{prefix}{name}"] = tensor
    return out


def vae_config_from_mimi(mimi: dict[str, Any]) -> dict[str, Any]:
    """The ``mimi`` section of a Pocket TTS yaml config -> ``AudioVAE`` keyword arguments."""

    def transformer(section: dict[str, Any]) -> dict[str, Any]:
        return {k: section[k] for k in _TRANSFORMER_KEYS if k in section}

    seanet_keys = (
        "channels", "dimension", "n_filters", "n_residual_layers", "ratios", "kernel_size",
        "last_kernel_size", "residual_kernel_size", "dilation_base", "compress", "pad_mode",
    )  # fmt: skip
    if mimi["seanet"]["pad_mode"] not in ("constant", "replicate"):
        raise ValueError(f"codec pad_mode {mimi['seanet']['pad_mode']!r} is not causal-streamable here")
    config: dict[str, Any] = dict(
        sample_rate=mimi["sample_rate"],
        frame_rate=mimi["frame_rate"],
        latent_dim=mimi["quantizer"]["dimension"],
        inner_dim=mimi.get("inner_dim") or mimi["seanet"]["dimension"],
        seanet={k: mimi["seanet"][k] for k in seanet_keys},
        transformer=transformer(mimi["transformer"]),
        weight_norm=False,
    )
    if mimi.get("decoder_seanet"):
        config["decoder_seanet"] = {k: mimi["decoder_seanet"][k] for k in seanet_keys}
    if mimi.get("decoder_transformer"):
        config["decoder_transformer"] = transformer(mimi["decoder_transformer"])
    return config


def mimi_config_from_vae(vae: AudioVAE) -> dict[str, Any]:
    """Our VAE -> the ``mimi`` section of a Pocket TTS yaml (``vae_config_from_mimi``'s inverse)."""
    config = vae.config
    if vae.frame_size == vae.encoder.hop_length:
        raise KyutaiLayoutError("a codec whose SEANet runs at the frame rate (no downsampling conv)")

    def transformer(name: str, dimension: int) -> dict[str, Any]:
        section = config[name]
        for key in ("context", "layer_scale"):
            if section.get(key) is None:
                raise KyutaiLayoutError(f"a codec {name} without {key} has no Pocket TTS equivalent")
        kept = {k: section[k] for k in _TRANSFORMER_KEYS}
        return {**kept, "input_dimension": dimension, "output_dimensions": [dimension]}

    seanet, decoder_seanet = config["seanet"], config["decoder_seanet"]
    decoder_dimension = decoder_seanet["dimension"]
    mimi: dict[str, Any] = dict(
        dtype="float32",
        sample_rate=config["sample_rate"],
        channels=seanet["channels"],
        frame_rate=config["frame_rate"],
        inner_dim=vae.inner_dim,
        outer_dim=decoder_dimension,
        seanet=dict(seanet),
        transformer=transformer("transformer", seanet["dimension"]),
        quantizer={"dimension": vae.latent_dim, "output_dimension": decoder_dimension},
    )
    if decoder_seanet != seanet:
        mimi["decoder_seanet"] = dict(decoder_seanet)
    decoder_transformer = transformer("decoder_transformer", decoder_dimension)
    if decoder_transformer != mimi["transformer"]:
        mimi["decoder_transformer"] = decoder_transformer
    return mimi


def load_mimi_codec(weights: str | Path, mimi_config: dict[str, Any]) -> AudioVAE:
    """Build an ``AudioVAE`` from released codec weights (a Pocket TTS model file or a codec file)
    and the ``mimi`` section of its yaml config; the bottleneck's log-variance head keeps its init."""
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"codec weights {path} do not exist")
    with safe_open(str(path), framework="pt") as handle:
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    vae = AudioVAE(**vae_config_from_mimi(mimi_config))
    converted = mimi_to_vae_state_dict(tensors)
    expected = set(vae.state_dict())
    missing = sorted(expected - set(converted) - set(_OUR_TRAINING_ONLY))
    if missing == [_V1_INPUT_PROJ]:
        # v1 files (english_2026-01) carry no bottleneck projection: the FlowLM reads the 512-d
        # features for voice prompts, so the codec still decodes latents and encodes prompts.
        vae.quantizer.input_proj_loaded, missing = False, []
    unexpected = sorted(set(converted) - expected)
    if missing or unexpected:
        raise KeyError(
            f"{path}: codec tensors do not fit its config: missing {missing[:6]}, unexpected {unexpected[:6]}"
        )
    kept = {name: tensor for name, tensor in converted.items() if name in expected}
    vae.load_inference_state_dict(kept, strict=False)
    return vae.eval()


def read_mimi_config(config: str | Path) -> dict[str, Any]:
    """The ``mimi`` section of a Pocket TTS yaml config file."""
    path = Path(config)
    if not path.is_file():
        raise FileNotFoundError(f"Pocket TTS config {path} does not exist")
    loaded = yaml.safe_load(path.read_text())
    if not isinstance(loaded, dict) or "mimi" not in loaded:
        raise ValueError(f"{path} has no `mimi` section: not a Pocket TTS config")
    return loaded["mimi"]


def import_mimi_codec(weights: str | Path, config: str | Path, out: str | Path) -> Path:
    """A released codec (a Pocket TTS model file or a codec file, with its yaml) -> an exported VAE at
    ``out``, for ``init_from`` or as a later stage's frozen codec."""
    vae = load_mimi_codec(weights, read_mimi_config(config))
    if not vae.quantizer.input_proj_loaded:
        raise ValueError(
            f"{weights} is a v1 codec without its latent projection: it cannot encode training latents; "
            "import the whole model for inference instead"
        )
    return vae.save(out)
