"""Whole released Pocket TTS checkpoints: one model file with ``flow_lm.*`` and ``mimi.*`` tensors
plus its yaml config <-> our ``FlowLM`` and ``AudioVAE``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from safetensors import safe_open
from safetensors.torch import save_file

from pockettts.compat import KyutaiLayoutError
from pockettts.compat.flow_lm import (
    flow_lm_config_from_pocket,
    flow_lm_to_pocket_state_dict,
    pocket_to_flow_lm_state_dict,
)
from pockettts.compat.mimi import load_mimi_codec, vae_to_mimi_state_dict
from pockettts.io import atomic_write
from pockettts.models.bundle import write_export
from pockettts.models.flow_lm import FlowLM
from pockettts.models.vae import AudioVAE
from pockettts.text import Tokenizer

# Ours only (training-time parts Kyutai's inference files do not carry).
_OPTIONAL = ("stats_updates", "head.distill_calls")


def read_pocket_config(config: str | Path | dict[str, Any]) -> dict[str, Any]:
    if isinstance(config, dict):
        return config
    path = Path(config)
    if not path.is_file():
        raise FileNotFoundError(f"Pocket TTS config {path} does not exist")
    loaded = yaml.safe_load(path.read_text())
    if not isinstance(loaded, dict) or "flow_lm" not in loaded or "mimi" not in loaded:
        raise ValueError(f"{path} is not a Pocket TTS config (needs `flow_lm` and `mimi` sections)")
    return loaded


def load_pocket_tts(weights: str | Path, config: str | Path | dict[str, Any]) -> tuple[FlowLM, AudioVAE]:
    """A released model file (e.g. ``kyutai/pocket-tts`` ``languages/english/model.safetensors`` on
    disk) and its yaml -> ``(FlowLM, AudioVAE)`` in eval mode, ready for generation or fine-tuning."""
    config = read_pocket_config(config)
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"Pocket TTS weights {path} do not exist")
    with safe_open(str(path), framework="pt") as handle:
        tensors = {name: handle.get_tensor(name) for name in handle.keys() if name.startswith("flow_lm.")}
    converted = pocket_to_flow_lm_state_dict(tensors)
    if "speaker_proj_weight" not in converted:
        raise ValueError(
            f"{path} has no voice projection (flow_lm.speaker_proj_weight): a model without voice cloning"
        )
    kwargs = flow_lm_config_from_pocket(
        config["flow_lm"], latent_dim=config["mimi"]["quantizer"]["dimension"],
        voice_dim=converted["speaker_proj_weight"].shape[1],
    )  # fmt: skip
    flow_lm = FlowLM(**kwargs)
    missing, unexpected = flow_lm.load_state_dict(converted, strict=False)
    missing = [k for k in missing if k not in _OPTIONAL and not k.startswith("head.w_s_t.")]
    if missing or unexpected:
        raise KeyError(
            f"{path}: FlowLM tensors do not fit: missing {missing[:6]}, unexpected {unexpected[:6]}"
        )
    flow_lm.stats_updates.fill_(flow_lm.stats_ema_steps)  # released statistics are final
    return flow_lm.eval(), load_mimi_codec(path, config["mimi"])


def save_pocket_tts(flow_lm: FlowLM, vae: AudioVAE, path: str | Path) -> Path:
    """Write our models in the released single-file layout (``flow_lm.*`` + ``mimi.*``), atomically."""
    voice_dim = flow_lm.speaker_proj_weight.shape[1]
    if voice_dim != vae.inner_dim:
        # Pocket TTS encodes voice prompts as the codec's downsampled features (inner_dim wide).
        raise KyutaiLayoutError(
            f"a FlowLM reading {voice_dim}-d voice features with a codec whose features are "
            f"{vae.inner_dim}-d has no Pocket TTS equivalent"
        )
    tensors = {**flow_lm_to_pocket_state_dict(flow_lm), **vae_to_mimi_state_dict(vae)}
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp)))


def import_pocket_tts(
    weights: str | Path, config: str | Path, out_dir: str | Path, tokenizer: str | Path | None = None
) -> tuple[Path, Path]:
    """A released model file and its yaml -> our exports ``out_dir/flow_lm.safetensors`` and
    ``out_dir/vae.safetensors`` (a teacher, a model to fine-tune or to run); ``tokenizer`` (its
    ``tokenizer.json`` or SentencePiece ``.model``) is checked, then copied beside them. Nothing is
    written when the tokenizer is unreadable or does not fit."""
    flow_lm, vae = load_pocket_tts(weights, config)
    if tokenizer is not None:
        vocab_size = Tokenizer(tokenizer).vocab_size
        if vocab_size != flow_lm.vocab_size:
            raise ValueError(
                f"the tokenizer {tokenizer} has {vocab_size} pieces, the model {flow_lm.vocab_size}"
            )
    out_dir = Path(out_dir)
    vae_path = vae.save(out_dir / "vae.safetensors")
    return write_export(flow_lm, out_dir / "flow_lm.safetensors", tokenizer, vae_path), vae_path
