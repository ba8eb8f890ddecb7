"""The validation cuts an exported backbone is evaluated on (``eval.resynthesis``, ``eval.text_gain``,
``eval.alignment``)."""

from __future__ import annotations

from pathlib import Path

from pockettts.data.examples import TeacherExampleDataset
from pockettts.data.latents import LatentCache
from pockettts.eval.runner import spread
from pockettts.models.bundle import read_export
from pockettts.models.flow_lm import FlowLM
from pockettts.text import Tokenizer


def validation_examples(
    teacher: str | Path, manifest: str | Path, cache_dir: str | Path, vae: str | Path | None = None
) -> tuple[FlowLM, TeacherExampleDataset, Path]:
    """An exported backbone, the validation cuts of ``manifest`` (prompt, tokens of its tokenizer,
    real target latents from the cache of ``vae``, default: the one recorded in the export) and
    that VAE's path."""
    export = read_export(teacher)
    vae_path = export.codec(vae)
    dataset = TeacherExampleDataset(
        manifest, LatentCache.open(cache_dir, vae_path), Tokenizer(export.tokenizer), random_cuts=False
    )
    return export.flow_lm, dataset, vae_path


def cut_indices(count: int, limit: int | None = None, spread_items: bool = False) -> list[int]:
    """The ``limit`` of ``count`` validation cuts a report reads: the first ones, or with
    ``spread_items`` spread evenly (a speaker-sorted manifest then gives every speaker)."""
    return spread(count, limit) if spread_items else list(range(count))[:limit]
