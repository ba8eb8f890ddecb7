"""Does a backbone align speech with its text? Per-head attention scores on validation cuts.

    pockettts-tools alignment --teacher RUN/export/teacher.safetensors \
        --manifest data/demo/clean/valid.jsonl --cache data/demo/latents [--limit 16] [--plot a.png]

Each head's ``text_mass`` (the share of an audio frame's attention on the text) and ``progress``
(how steadily its centre moves through the text; +1 for a diagonal), averaged over the cuts and
ranked by ``progress`` (``pockettts.eval.alignment``). ``--plot`` draws the best head's attention
on the first item.
"""

from __future__ import annotations

import argparse
import json

from pockettts.eval.alignment import alignment_report, plot_head
from pockettts.eval.validation_cuts import validation_examples
from pockettts.io import atomic_write_text
from pockettts.tools._options import add_cut_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_cut_arguments(parser)
    parser.add_argument("--plot", default=None, help="PNG of the best head on the first item")
    parser.add_argument("--out", default=None, help="also write the report (JSON) to this file")


def run(args: argparse.Namespace) -> int:
    report = alignment_report(args.teacher, args.manifest, args.cache, args.vae, args.limit, args.spread)
    print(json.dumps(report, indent=2))
    if args.out:
        atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    if args.plot:
        model, dataset, _ = validation_examples(args.teacher, args.manifest, args.cache, args.vae)
        best = report["heads"][0]
        print(f"wrote {plot_head(model, dataset[0], best['layer'], best['head'], args.plot)}")
    return 0
