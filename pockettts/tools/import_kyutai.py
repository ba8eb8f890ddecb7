"""Import Kyutai's released Pocket TTS weights as exports of ours.

    pockettts-tools import-kyutai --weights model.safetensors --config english.yaml --out DIR
    # -> DIR/flow_lm.safetensors and DIR/vae.safetensors: a teacher, a model to fine-tune or to run
    #    (--tokenizer tokenizer.json: checked against the model and copied beside them)
    pockettts-tools import-kyutai --codec --weights W --config english.yaml --out vae.safetensors
    # -> just the codec as an exported VAE (``init_from``, or a later stage's frozen codec)

``--weights`` is a released model file (or, with ``--codec``, a codec file) and ``--config`` its
Pocket TTS yaml. The first release's codec (english_2026-01, v1) has no latent projection: it
imports as part of a whole model, not alone.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pockettts.compat.mimi import import_mimi_codec
from pockettts.compat.pocket import import_pocket_tts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", required=True, help="a Pocket TTS model (or codec) .safetensors")
    parser.add_argument("--config", required=True, help="its Pocket TTS yaml config")
    parser.add_argument(
        "--out", required=True, type=Path, help="a folder; with --codec, the VAE file to write"
    )
    parser.add_argument("--codec", action="store_true", help="import only the codec (`mimi` section)")
    parser.add_argument(
        "--tokenizer",
        default=None,
        type=Path,
        help="its tokenizer.json or SentencePiece .model, copied beside the export under its own name",
    )


def run(args: argparse.Namespace) -> int:
    if args.codec and args.tokenizer:
        print("import-kyutai: --tokenizer belongs to a whole model, not to --codec", file=sys.stderr)
        return 2
    try:
        if args.codec:
            written = [import_mimi_codec(args.weights, args.config, args.out)]
        else:
            written = list(import_pocket_tts(args.weights, args.config, args.out, args.tokenizer))
    except (OSError, ValueError, KeyError) as err:
        print(f"import-kyutai: {err}", file=sys.stderr)
        return 2
    print("wrote " + " and ".join(map(str, written)))
    return 0
