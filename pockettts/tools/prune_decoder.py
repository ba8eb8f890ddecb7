"""A light decoder initialised from a codec's own: channel pruning with least-squares reconstruction.

    pockettts-tools prune-decoder --vae recipes/tiny/checkpoints/vae.safetensors \\
        --manifest data/demo_wn_all/clean/train.jsonl --items 24 --seconds 3 \\
        --seanet dimension=128 n_filters=16 --transformer d_model=128 num_heads=2 dim_feedforward=256 \\
        --out logs/small/pruned/vae.safetensors

Writes a codec with the source's encoder (the same latents) and a narrower decoder
(``pockettts.training.decoder_pruning``), calibrated on the first ``--items`` clips of the manifest
(each cut to ``--seconds``; shorter ones are skipped), and prints each refit layer's relative residual
and the mel distance of the source's and the narrow decoder's reconstructions of the calibration clips.
Train it further with ``train.py ... model.init_from=<out> model.init_decoder=true`` and the same
decoder settings (``configs/experiment/vae_light_decoder_tiny.yaml``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import yaml
from torch import nn

from pockettts.audio import audio_info, load_audio
from pockettts.data.manifest import read_manifest
from pockettts.losses.spectral import mel_distance
from pockettts.models.vae import DECODER_SIDE, AudioVAE, load_vae
from pockettts.training.decoder_pruning import prune_decoder


def _settings(pairs: list[str], flag: str) -> dict[str, object]:
    """``["key=value", ...]`` -> a dict, each value read as YAML (``16`` an int, ``1e-2`` a float)."""
    settings = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"{flag}: expected KEY=VALUE, got {pair!r}")
        settings[key] = yaml.safe_load(value)
    return settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--vae", required=True, help="the source codec (an exported .safetensors)")
    parser.add_argument("--manifest", required=True, help="calibration audio (a validated manifest)")
    parser.add_argument("--items", type=int, default=24, help="calibration clips (default 24)")
    parser.add_argument("--seconds", type=float, default=3.0, help="length each clip is cut to")
    parser.add_argument("--seanet", nargs="*", default=[], help="decoder_seanet overrides, KEY=VALUE")
    parser.add_argument("--transformer", nargs="*", default=[], help="decoder_transformer overrides")
    parser.add_argument("--ridge", type=float, default=1e-4, help="relative ridge of every fit")
    parser.add_argument("--out", required=True, help="where to write the narrow codec (.safetensors)")


def calibration_audio(manifest: str, items: int, seconds: float, sample_rate: int) -> torch.Tensor:
    """The first ``items`` clips of ``manifest`` at least ``seconds`` long, each cut to ``seconds``:
    ``[N, 1, T]``."""
    root, length = Path(manifest).parent, round(seconds * sample_rate)
    clips = []
    for item in read_manifest(manifest):
        if len(clips) == items:
            break
        path = item.resolve_audio(root)
        available = item.duration if item.duration is not None else audio_info(path).duration - item.offset
        if available < seconds:
            continue
        audio = load_audio(path, sample_rate, offset=item.offset, duration=seconds)
        clips.append(nn.functional.pad(audio, (0, length - audio.shape[-1]))[..., :length])
    if not clips:
        raise ValueError(f"{manifest} has no clip of at least {seconds} s to calibrate with")
    return torch.stack(clips)


@torch.no_grad()
def run(args: argparse.Namespace) -> int:
    seanet, transformer = _settings(args.seanet, "--seanet"), _settings(args.transformer, "--transformer")
    source = load_vae(args.vae)
    audio = calibration_audio(args.manifest, args.items, args.seconds, source.sample_rate)
    latents = source.encode(audio)
    narrow, fits = prune_decoder(source, latents, seanet, transformer, ridge=args.ridge)
    narrow.save(args.out)

    def decoder_size(vae: AudioVAE) -> int:
        return sum(p.numel() for name in DECODER_SIDE for p in vae.get_submodule(name).parameters())

    report = {
        "out": args.out,
        "calibration_clips": len(audio),
        "decoder_parameters": {"source": decoder_size(source), "narrow": decoder_size(narrow)},
        "mel_distance": {
            name: float(mel_distance(vae.decode(latents)[..., : audio.shape[-1]], audio, source.sample_rate))
            for name, vae in (("source", source), ("narrow", narrow))
        },
        "relative_residual": fits,
    }
    print(json.dumps(report, indent=2))
    return 0
