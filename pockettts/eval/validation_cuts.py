"""The validation cuts an exported backbone is evaluated on (``eval.resynthesis``, ``eval.text_gain``)."""

from __future__ import annotations

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
