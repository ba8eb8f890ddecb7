"""Corpus preparation commands: ``pockettts-data <command> ...`` (or ``python -m pockettts.data``).

demo         build the offline multi-speaker demo corpus (Debian TTS voices)
from-hf      convert a Hugging Face dataset split into a manifest
from-folder  convert a local folder (LJSpeech metadata.csv, or audio + transcript pairs)
validate     check every item of a manifest, write the clean manifest and a report
stats        hours, items and speakers of a manifest
tokenizer    train a SentencePiece tokenizer on manifest transcripts
encode       encode a manifest into a latent cache with a frozen exported VAE
align        add Whisper word alignments of the reference transcripts
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import Counter
from dataclasses import fields
from pathlib import Path

from pockettts.data.latents import build_latent_cache
from pockettts.data.manifest import read_manifest
from pockettts.data.sources import PRESETS, HFColumns, HFSourceConfig, manifest_from_folder, manifest_from_hf
from pockettts.data.synthetic import DEFAULT_VOICES, DemoCorpusConfig, build_demo_corpus
from pockettts.data.validate import ValidationConfig, validate_manifest
from pockettts.devices import DEVICE_CHOICES
from pockettts.text import MODEL_TYPES, TextError, Tokenizer, VocabularyTooLargeError, train_tokenizer

MAX_PROBLEMS_SHOWN = 20


def _demo(args: argparse.Namespace) -> int:
    config = DemoCorpusConfig(
        voices=args.voices,
        sentences_file=args.sentences,
        max_sentences=args.max_sentences,
        train_sentences_per_speaker=args.train_fraction,
        valid_fraction=args.valid_fraction,
        test_fraction=args.test_fraction,
        seed=args.seed,
        workers=args.workers,
    )
    summary = build_demo_corpus(args.out, config)
    print(json.dumps({k: summary[k] for k in ("fingerprint", "speakers", "splits")}, indent=2))
    return 0


def _validate(args: argparse.Namespace) -> int:
    config = ValidationConfig(
        min_duration=args.min_duration, max_duration=args.max_duration, silence_db=args.silence_db
    )
    report = validate_manifest(args.manifest, args.out, args.report, config, args.workers)
    print(report.summary())
    for problem in report.problems[:MAX_PROBLEMS_SHOWN]:
        print(f"  [{problem.code}] {problem.message}")
    if len(report.problems) > MAX_PROBLEMS_SHOWN:
        print(f"  ... {len(report.problems) - MAX_PROBLEMS_SHOWN} more in the report")
    print(f"clean manifest: {args.out}")
    if report.kept == 0:
        print("error: no usable items", file=sys.stderr)
        return 1
    return 0


def _from_hf(args: argparse.Namespace) -> int:
    base = PRESETS[args.preset] if args.preset else HFSourceConfig(name=args.name)
    columns = HFColumns(
        **{
            f.name: getattr(args, f"{f.name}_column") or getattr(base.columns, f.name)
            for f in fields(HFColumns)
        }
    )
    where = dict(base.where)
    for clause in args.where:
        key, _, value = clause.partition("=")
        where[key] = value
    source = HFSourceConfig(
        name=args.name or base.name,
        config=args.config or base.config,
        split=args.split or base.split,
        columns=columns,
        data_files=args.data_files or base.data_files,
        data_dir=args.data_dir or base.data_dir,
        audio_root=args.audio_root or base.audio_root,
        where=where,
        language=args.language,
        max_items=args.max_items,
    )
    print(json.dumps(manifest_from_hf(source, args.out, workers=args.workers)))
    return 0


def _from_folder(args: argparse.Namespace) -> int:
    print(json.dumps(manifest_from_folder(args.root, args.out, args.layout, args.speaker, args.language)))
    return 0


def _stats(args: argparse.Namespace) -> int:
    items = read_manifest(args.manifest)
    known = [i.duration for i in items if i.duration is not None]
    speakers = Counter(i.speaker for i in items)
    print(
        f"{args.manifest}: {len(items)} items, {len(speakers)} speakers, "
        f"{sum(known) / 3600:.3f} h ({len(items) - len(known)} without duration)"
    )
    for speaker, count in speakers.most_common():
        print(f"  {speaker:<28} {count:>7}")
    return 0


def _tokenizer(args: argparse.Namespace) -> int:
    try:
        model_path = train_tokenizer(
            args.manifest,
            args.out,
            vocab_size=args.vocab_size,
            model_type=args.model_type,
            character_coverage=args.character_coverage,
            seed=args.seed,
            hard_vocab_limit=not args.soft_vocab_limit,
            max_sentences=args.max_sentences,
        )
    except (VocabularyTooLargeError, TextError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    tokenizer = Tokenizer(model_path)
    print(
        json.dumps({"model": str(model_path), "vocab_size": tokenizer.vocab_size, "pad_id": tokenizer.pad_id})
    )
    return 0


def _encode(args: argparse.Namespace) -> int:
    for manifest in args.manifest:
        cache = build_latent_cache(
            manifest,
            args.vae,
            args.out,
            shard_size=args.shard_size,
            device=args.device,
            progress=not args.no_progress,
            silence_db=args.silence_db,
            workers=args.workers,
        )
        print(json.dumps({"cache": str(cache.cache_dir), "items": len(cache), **cache.meta["last_run"]}))
    if len(cache) == 0:
        print("error: the latent cache is empty", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pockettts.data",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="build the offline demo corpus")
    demo.add_argument("--out", type=Path, default=Path("data/demo"))
    demo.add_argument("--voices", nargs="+", default=list(DEFAULT_VOICES))
    demo.add_argument("--sentences", default=None, help="one sentence per line (default: bundled list)")
    demo.add_argument("--max-sentences", type=int, default=None)
    demo.add_argument(
        "--train-fraction", type=float, default=0.5, help="fraction of train sentences each speaker reads"
    )
    # Every voice reads every held-out sentence: with a long sentence list, small fractions suffice.
    demo.add_argument("--valid-fraction", type=float, default=0.05, help="of the sentences, held out")
    demo.add_argument("--test-fraction", type=float, default=0.05, help="of the sentences, held out")
    demo.add_argument("--seed", type=int, default=1234)
    demo.add_argument("--workers", type=int, default=2)
    demo.set_defaults(run=_demo)

    val = sub.add_parser("validate", help="check a manifest and write its clean version")
    val.add_argument("manifest", type=Path)
    val.add_argument("--out", type=Path, required=True)
    val.add_argument("--report", type=Path, default=None)
    val.add_argument("--min-duration", type=float, default=ValidationConfig.min_duration)
    val.add_argument("--max-duration", type=float, default=ValidationConfig.max_duration)
    val.add_argument("--silence-db", type=float, default=ValidationConfig.silence_db)
    val.add_argument("--workers", type=int, default=2)
    val.set_defaults(run=_validate)

    hf = sub.add_parser("from-hf", help="convert a Hugging Face dataset split")
    hf.add_argument(
        "name",
        nargs="?",
        default=None,
        help="hub id, save_to_disk folder, or builder (parquet, json, audiofolder)",
    )
    hf.add_argument("--preset", choices=sorted(PRESETS), default=None)
    hf.add_argument("--out", type=Path, required=True)
    hf.add_argument("--config", default=None)
    hf.add_argument("--split", default=None)
    hf.add_argument("--data-files", nargs="+", default=None)
    hf.add_argument("--data-dir", default=None)
    hf.add_argument("--audio-root", default=None, help="root of relative audio paths")
    hf.add_argument("--where", nargs="*", default=[], metavar="COLUMN=VALUE")
    hf.add_argument("--language", default="en")
    hf.add_argument("--max-items", type=int, default=None)
    hf.add_argument("--workers", type=int, default=1, help="processes converting rows (one core each)")
    for f in fields(HFColumns):
        hf.add_argument(f"--{f.name}-column", default=None, help=f"column holding the {f.name}")
    hf.set_defaults(run=_from_hf)

    folder = sub.add_parser("from-folder", help="convert a local corpus folder")
    folder.add_argument("root", type=Path)
    folder.add_argument("--out", type=Path, required=True)
    folder.add_argument("--layout", choices=("auto", "ljspeech", "pairs"), default="auto")
    folder.add_argument("--speaker", default=None)
    folder.add_argument("--language", default="en")
    folder.set_defaults(run=_from_folder)

    stats = sub.add_parser("stats", help="summarise a manifest")
    stats.add_argument("manifest", type=Path)
    stats.set_defaults(run=_stats)

    tok = sub.add_parser("tokenizer", help="train a SentencePiece tokenizer on transcripts")
    tok.add_argument("--manifest", type=Path, action="append", required=True, help="repeat for several")
    tok.add_argument("--out", type=Path, required=True, help="prefix: writes <out>.model and <out>.vocab")
    tok.add_argument("--vocab-size", type=int, default=4000)
    tok.add_argument("--model-type", choices=MODEL_TYPES, default="bpe")
    tok.add_argument("--character-coverage", type=float, default=1.0, help="0.9995 for CJK scripts")
    tok.add_argument("--seed", type=int, default=0)
    tok.add_argument(
        "--soft-vocab-limit", action="store_true", help="stop below --vocab-size if the corpus is too small"
    )
    tok.add_argument("--max-sentences", type=int, default=None, help="train on a random sample")
    tok.set_defaults(run=_tokenizer)

    enc = sub.add_parser("encode", help="encode a manifest into a latent cache with a frozen VAE")
    enc.add_argument("--manifest", type=Path, action="append", required=True, help="repeat for several")
    enc.add_argument("--vae", type=Path, required=True, help="exported VAE (.safetensors)")
    enc.add_argument("--out", type=Path, required=True, help="cache root; one subfolder per VAE hash")
    enc.add_argument("--shard-size", type=int, default=256)
    enc.add_argument("--device", default="cpu", help=f"where the VAE encodes: {DEVICE_CHOICES}")
    enc.add_argument("--workers", type=int, default=2, help="threads decoding audio ahead of the encoder")
    enc.add_argument("--silence-db", type=float, default=ValidationConfig.silence_db)
    enc.add_argument("--no-progress", action="store_true")
    enc.set_defaults(run=_encode)

    align = sub.add_parser("align", help="add Whisper word alignments of the reference transcripts")
    align.add_argument("--manifest", type=Path, required=True)
    align.add_argument("--out", type=Path, required=True)
    align.add_argument(
        "--whisper", required=True, help="openai-whisper checkpoint (.pt: pockettts-tools whisper-convert)"
    )
    align.add_argument("--language", default="en")
    align.add_argument("--overwrite", action="store_true", help="re-align items that already have words")
    align.add_argument("--device", default="cpu", help=f"where Whisper runs: {DEVICE_CHOICES}")
    align.set_defaults(run=_align)
    return parser


def _align(args: argparse.Namespace) -> int:
    from pockettts.data.align import WhisperAligner, align_manifest

    aligner = WhisperAligner(args.whisper, args.language, args.device)
    counts = align_manifest(args.manifest, args.out, aligner, args.overwrite)
    print(json.dumps({"out": str(args.out), **counts}))
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    if args.command == "from-hf" and not (args.name or args.preset):
        build_parser().error("from-hf needs a dataset name or --preset")
    return args.run(args)
