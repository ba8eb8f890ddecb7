"""How much a backbone uses its text: head loss with and without it on validation cuts.

    pockettts-tools text-gain --teacher RUN/export/teacher.safetensors \
        --manifest data/demo/clean/valid.jsonl --cache data/demo/latents [--limit 32] [--draws 8]

The gap ``text_gain`` (``pockettts.eval.text_gain``) is what training logs as ``val/text_gain``.
Comparing training sentences with held-out ones separates memorising from reading: ≈ 0 on held-out
sentences means new text is not read; a large gap on training sentences with a negative one on new
text means sentence -> audio pairs were memorised.
"""

from __future__ import annotations

import argparse
import json

from pockettts.eval.text_gain import text_gain
from pockettts.tools._options import add_cut_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_cut_arguments(parser)
    parser.add_argument("--draws", type=int, default=8, help="seeded head draws per item")


def run(args: argparse.Namespace) -> int:
    report = text_gain(
        args.teacher, args.manifest, args.cache, args.vae, args.limit, args.draws, spread_items=args.spread
    )
    print(json.dumps(report, indent=2))
    return 0
