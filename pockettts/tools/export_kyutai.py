"""Export a model of ours to Kyutai's layout: a folder the `pocket-tts` package runs from its config.

    pockettts-tools export-kyutai RUN/export/student.safetensors out/kyutai [--vae V] [--voice prompt.wav]
    pocket-tts generate --config out/kyutai/config.yaml --voice out/kyutai/voice.wav --text "Hello."

The folder holds ``model.safetensors`` (FlowLM and codec in the released single-file layout), the
tokenizer and a ``config.yaml`` in pocket-tts's own schema with absolute paths, so its CLI
(``generate``, ``serve``, ``export-voice``) and ``TTSModel.load_model(config=...)`` run the model;
``--voice`` copies a prompt in (without one, pocket-tts downloads its default voice). LSD and
flow-matching heads export as they are (flow matching wants ``--sampler-decode-steps``), a
consistency head as its one-step sampler. Parts Kyutai's layout cannot hold are refused by name.
"""

from __future__ import annotations

import argparse
import sys

from pockettts.compat import KyutaiLayoutError
from pockettts.compat.kyutai_folder import export_kyutai_folder


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="an exported FlowLM (teacher or student), its tokenizer beside it")
    parser.add_argument("out_dir", help="the folder to write")
    parser.add_argument("--vae", default=None, help="the codec (default: the one recorded in the export)")
    parser.add_argument("--voice", default=None, help="a voice prompt (audio file) to copy into the folder")


def run(args: argparse.Namespace) -> int:
    try:
        config = export_kyutai_folder(args.model, args.out_dir, args.vae, args.voice)
    except (KyutaiLayoutError, FileNotFoundError) as err:
        print(f"export-kyutai: {err}", file=sys.stderr)
        return 2
    voice = sorted(config.parent.glob("voice.*"))
    print(f"wrote {config.parent}; run it with: pocket-tts generate --config {config}", end="")
    print(f" --voice {voice[0]}" if voice else "")
    return 0
