"""Does a backbone say its prompts' texts as well as the codec? Generated vs codec WER.

    pockettts-tools resynthesis --teacher RUN/export/teacher.safetensors \
        --manifest data/demo/clean/overfit8.jsonl --cache data/demo/latents \
        --whisper checkpoints/whisper/tiny.en.pt --out RUN/resynthesis

For each validation cut the backbone generates from the voice prompt and text; the generation and
the codec's decoding of the real latents are both transcribed by Whisper and both WERs reported
(the codec's own is the ceiling), with the latent and mel distances between them
(``pockettts.eval.resynthesis``). ``--teacher-forced`` predicts each frame from the real frames
before it instead, so generation's own errors cannot pile up: the pair of reports tells a backbone
that cannot say a frame from one that loses its way. Writes wavs, ``items.jsonl`` and
``summary.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json

from pockettts.eval.resynthesis import resynthesis_report
from pockettts.models.sampling import SamplingOptions
from pockettts.tools._options import add_cut_arguments, add_loop_guard_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_cut_arguments(parser)
    parser.add_argument("--whisper", required=True, help="openai-whisper checkpoint")
    parser.add_argument("--out", required=True)
    defaults = SamplingOptions()
    parser.add_argument("--cfg-scale", type=float, default=defaults.cfg_scale)
    parser.add_argument("--temperature", type=float, default=defaults.temperature)
    parser.add_argument("--seed", type=int, default=defaults.seed, help="item i is sampled at seed + i")
    parser.add_argument(
        "--teacher-forced", action="store_true", help="each frame from the real frames before it"
    )
    add_loop_guard_argument(parser)


def run(args: argparse.Namespace) -> int:
    summary = resynthesis_report(
        args.teacher, args.manifest, args.cache, args.whisper, args.out, args.vae,
        SamplingOptions(cfg_scale=args.cfg_scale, temperature=args.temperature, seed=args.seed),
        limit=args.limit, spread_items=args.spread, teacher_forced=args.teacher_forced,
        loop_guard=args.loop_guard,
    )  # fmt: skip
    print(json.dumps(summary, indent=2))
    return 0
