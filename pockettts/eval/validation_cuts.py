"""The validation cuts an exported backbone is evaluated on (``eval.resynthesis``, ``eval.text_gain``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from pockettts.data.examples import TeacherExampleDataset
from pockettts.data.latents import LatentCache
from pockettts.models.flow_lm import FlowLM, codec_for, load_flow_lm, read_flow_lm_metadata
from pockettts.text import Tokenizer


def validation_examples(
    teacher: str | Path, manifest: str | Path, cache_dir: str | Path, vae: str | Path | None = None
) -> tuple[FlowLM, TeacherExampleDataset, Path]:
    """An exported backbone, the validation cuts of ``manifest`` (prompt, tokens of its tokenizer,
    real target latents from the cache of ``vae``, default: the one recorded in the export) and
    that VAE's path."""
    teacher = Path(teacher)
    metadata = read_flow_lm_metadata(teacher)
    vae_path = codec_for(teacher, vae)
    tokenizer = Tokenizer(teacher.parent / metadata.get("tokenizer", "tokenizer.model"))
    dataset = TeacherExampleDataset(
        manifest, LatentCache.open(cache_dir, vae_path), tokenizer, random_cuts=False
    )
    return load_flow_lm(teacher), dataset, vae_path


def add_cut_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of every report on validation cuts: the export, the manifest and its latent
    cache, the codec, and which items."""
    parser.add_argument("--teacher", required=True, help="an exported FlowLM")
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--cache", required=True, help="latent cache root of the manifest")
    parser.add_argument("--vae", default=None, help="default: the VAE recorded in the teacher export")
    parser.add_argument("--limit", type=int, default=None, help="first N items (see --spread)")
    parser.add_argument("--spread", action="store_true", help="the N items spread evenly over the manifest")
