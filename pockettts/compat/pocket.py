"""Whole released Pocket TTS checkpoints: one model file with ``flow_lm.*`` and ``mimi.*`` tensors
plus its yaml config <-> our ``FlowLM`` and ``AudioVAE``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import safe_open
from safetensors.torch import save_file

from pockettts.compat.flow_lm import (
    flow_lm_config_from_pocket,
    flow_lm_to_pocket_state_dict,
    pocket_to_flow_lm_state_dict,
)
from pockettts.compat.mimi import load_mimi_codec, vae_to_mimi_state_dict
from pockettts.models.flow_lm import FlowLM
from pockettts.models.vae import AudioVAE, vae_latent_hash
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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {
        **flow_lm_to_pocket_state_dict(flow_lm),
        **vae_to_mimi_state_dict(vae),
    }
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
    tmp.replace(path)
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m pockettts.compat.pocket --weights model.safetensors --config english.yaml --out DIR
    [--tokenizer tokenizer.json]``: a released model as our exports (``DIR/flow_lm.safetensors``,
    ``DIR/vae.safetensors``), usable as a teacher, for fine-tuning or for inference."""
    import argparse
    import shutil

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument(
        "--tokenizer",
        default=None,
        type=Path,
        help="its tokenizer.json or SentencePiece .model, copied beside the export under its own name",
    )
    args = parser.parse_args(argv)
    flow_lm, vae = load_pocket_tts(args.weights, args.config)
    if args.tokenizer:
        try:
            tokenizer = Tokenizer(args.tokenizer)
        except (OSError, ValueError) as err:
            parser.error(str(err))
        if tokenizer.vocab_size != flow_lm.vocab_size:
            parser.error(f"{tokenizer} does not fit the model's {flow_lm.vocab_size} text tokens")
    vae_path = vae.save(args.out / "vae.safetensors")
    metadata = {"vae": str(vae_path), "latent_hash": vae_latent_hash(vae_path)}
    if args.tokenizer:
        if args.tokenizer.resolve() != (args.out / args.tokenizer.name).resolve():
            shutil.copyfile(args.tokenizer, args.out / args.tokenizer.name)
        metadata["tokenizer"] = args.tokenizer.name
    print(f"wrote {flow_lm.save(args.out / 'flow_lm.safetensors', metadata)} and {vae_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
