"""The validation cuts a backbone report reads, one JSON line each (id, text, lengths).

    pockettts-tools validation-cuts --teacher RUN/export/teacher.safetensors \
        --manifest data/demo/clean/valid.jsonl --cache data/demo/latents [--limit 8] [--spread]

Each manifest item's fixed cut (``pockettts.eval.validation_cuts``): the voice prompt, the text as
the export's tokenizer reads it and the real target latents of the export's codec. ``resynthesis``,
``text-gain`` and ``alignment`` take the same options and read the same cuts.
"""

from __future__ import annotations

import argparse
import json

from pockettts.eval.validation_cuts import cut_indices, validation_examples
from pockettts.tools._options import add_cut_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_cut_arguments(parser)


def run(args: argparse.Namespace) -> int:
    _, dataset, _ = validation_examples(args.teacher, args.manifest, args.cache, args.vae)
    for index in cut_indices(len(dataset), args.limit, args.spread):
        example = dataset[index]
        print(json.dumps({
            "id": example["id"], "text": example["text"], "tokens": example["tokens"].shape[0],
            "voice_frames": example["voice"].shape[0], "target_frames": example["target"].shape[0],
        }))  # fmt: skip
    return 0
