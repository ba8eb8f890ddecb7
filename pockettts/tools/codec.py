"""Reconstruction quality of a VAE over a manifest (mel distance, SI-SDR, Whisper WER).

    pockettts-tools codec --vae <run>/export/vae.safetensors --manifest data/demo/clean/valid.jsonl
    pockettts-tools codec --vae ... --manifest ... --untrained   # same architecture, random init

    pockettts-tools codec --vae ... --manifest ... --whisper checkpoints/whisper/base.pt

Reports the mean 80-mel log-mel L1 distance, lower is better, and the clip-level SI-SDR
(``pockettts.eval.codec``), and writes them as JSON when ``--out`` is given. With ``--whisper`` it
also transcribes every original clip and its reconstruction: the WER of the originals is the floor
the codec is judged against.
"""

from __future__ import annotations

import argparse
import json

import torch

from pockettts.eval.codec import codec_report
from pockettts.io import atomic_write_text
from pockettts.models.vae import AudioVAE, load_vae
from pockettts.tools._options import add_loop_guard_argument
from pockettts.whisper import WhisperASR


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--vae", required=True, help="an exported VAE (.safetensors)")
    parser.add_argument("--manifest", required=True, help="a validated manifest (jsonl)")
    parser.add_argument("--limit", type=int, default=None, help="first N items only")
    parser.add_argument(
        "--untrained", action="store_true", help="score a random init of the same architecture"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the --untrained init")
    parser.add_argument("--out", default=None, help="write the report here as JSON")
    parser.add_argument(
        "--whisper", default=None, help="openai-whisper checkpoint: also transcribe originals and rebuilds"
    )
    add_loop_guard_argument(parser)


def run(args: argparse.Namespace) -> int:
    vae = load_vae(args.vae)
    if args.untrained:
        torch.manual_seed(args.seed)
        vae = AudioVAE(**vae.config).eval()
    asr = WhisperASR(args.whisper, loop_guard=args.loop_guard) if args.whisper else None
    report = {
        "vae": args.vae, "untrained": args.untrained, **codec_report(vae, args.manifest, args.limit, asr)
    }  # fmt: skip
    print(json.dumps(report, indent=2))
    if args.out:
        atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    return 0
