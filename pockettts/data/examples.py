"""Training examples for the TTS backbone: voice prompt + text + target latents from one utterance.

As in Kyutai's open training recipe, the prompt is a *prefix of the same utterance*,
cut between two aligned words (or sentences); the target is the rest of the utterance, ending
``trail_sec`` after its last word so that end-of-speech sits at a consistent place, and the text is
what is said after the cut. Without any alignment the prompt is a random window of the utterance
and the target is all of it with the full transcript.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from pockettts.data.latents import LatentCache
from pockettts.data.manifest import ManifestItem, TimedSpan, read_manifest
from pockettts.text import TextError, Tokenizer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CutConfig:
    """How prompts and targets are cut (seconds).

    ``max_voice_prompt_sec``: longest prompt; 0 means the whole prefix before the cut (distillation).
    ``min_cut_sec``: at least this much speech on each side of the cut.
    ``trail_sec``: audio kept after the last word of the target.
    ``max_target_sec``: longest target.
    """

    max_voice_prompt_sec: float = 5.0
    min_cut_sec: float = 1.0
    trail_sec: float = 0.2
    max_target_sec: float = 30.0


@dataclass(frozen=True)
class Cut:
    """Frame ranges ``[start, end)`` of the prompt and the target, and the target's text."""

    prompt: tuple[int, int]
    target: tuple[int, int]
    text: str


def _spans(item: ManifestItem) -> list[TimedSpan]:
    """Word alignments if present, else sentence segments (exact for the demo corpus)."""
    return list(item.words or item.segments or [])


def cut_item(
    item: ManifestItem, n_frames: int, frame_rate: float, rng: random.Random, config: CutConfig
) -> Cut:
    """Choose a prompt/target cut of ``item`` whose latents have ``n_frames`` frames."""
    spans = _spans(item)
    to_frame = lambda seconds: min(n_frames, max(0, round(seconds * frame_rate)))  # noqa: E731
    if len(spans) >= 2:
        last_end = spans[-1].end
        candidates = []
        for before, after in zip(spans[:-1], spans[1:]):
            cut = 0.5 * (before.end + after.start)
            fits_prompt = config.max_voice_prompt_sec <= 0 or before.end <= config.max_voice_prompt_sec
            if cut >= config.min_cut_sec and last_end - cut >= config.min_cut_sec and fits_prompt:
                candidates.append((cut, after))
        if candidates:
            cut, first_after = rng.choice(candidates)
            prompt_start = (
                0.0 if config.max_voice_prompt_sec <= 0 else max(0.0, cut - config.max_voice_prompt_sec)
            )
            end = min(last_end + config.trail_sec, cut + config.max_target_sec)
            text = " ".join(s.text for s in spans[spans.index(first_after) :] if s.end <= end + 1e-6)
            return Cut((to_frame(prompt_start), to_frame(cut)), (to_frame(cut), to_frame(end)), text)
    # No usable alignment: a random window of the utterance as prompt, all of it as target.
    duration = n_frames / frame_rate
    window = duration if config.max_voice_prompt_sec <= 0 else min(config.max_voice_prompt_sec, duration)
    start = rng.uniform(0.0, duration - window)
    end = min(duration, config.max_target_sec)
    return Cut((to_frame(start), to_frame(start + window)), (0, to_frame(end)), item.text)


class TeacherExampleDataset(Dataset):
    """``(index, epoch)`` -> voice prompt latents, text tokens and target latents of one utterance.

    Latents come from a ``LatentCache`` built with the frozen VAE; cuts are deterministic given
    ``(seed, epoch, index)``. Items missing from the cache, or whose text tokenizes to nothing,
    are left out at construction (counted and logged).
    """

    def __init__(
        self,
        manifest: str | Path,
        cache: LatentCache,
        tokenizer: Tokenizer,
        cut: CutConfig | None = None,
        seed: int = 0,
        random_cuts: bool = True,
    ):
        self.manifest = Path(manifest)
        self.cache = cache
        self.tokenizer = tokenizer
        self.cut = cut or CutConfig()
        self.seed = seed
        self.random_cuts = random_cuts
        items = read_manifest(self.manifest)
        self.items = [item for item in items if item.id in cache and self._speakable(item)]
        dropped = len(items) - len(self.items)
        if dropped:
            log.warning(
                "%s: %d of %d items left out (not in the latent cache or no text)",
                manifest,
                dropped,
                len(items),
            )
        if not self.items:
            raise ValueError(
                f"{manifest}: no item has cached latents and speakable text (cache {cache.cache_dir})"
            )

    def _speakable(self, item: ManifestItem) -> bool:
        try:
            self.tokenizer.encode(item.text)
        except TextError:
            return False
        return True

    def __len__(self) -> int:
        return len(self.items)

    @property
    def durations(self) -> list[float]:
        return [min(item.duration or 0.0, self.cut.max_target_sec + 5.0) for item in self.items]

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        item = self.items[index]
        latents = self.cache.get(item.id)
        rng = random.Random(f"{self.seed}/{epoch if self.random_cuts else 0}/{index}")
        cut = cut_item(item, latents.shape[0], self.cache.frame_rate, rng, self.cut)
        try:
            tokens = self.tokenizer.encode(cut.text)
        except TextError:  # a cut whose remaining text is unspeakable: fall back to the full text
            cut = Cut((0, 0), (0, latents.shape[0]), item.text)
            tokens = self.tokenizer.encode(cut.text)
        return {
            "id": item.id,
            "voice": latents[cut.prompt[0] : cut.prompt[1]],
            "tokens": torch.tensor(tokens, dtype=torch.long),
            "target": latents[cut.target[0] : cut.target[1]],
            "text": cut.text,
        }


@dataclass
class TeacherBatch:
    """Padded teacher-forcing examples (right padding; the lengths say what is real).

    Attributes:
        voice: ``[B, Fv, D]`` prompt latents, ``voice_lengths`` ``[B]``.
        text: ``[B, L]`` token ids (padded with the tokenizer's ``pad_id``), ``text_lengths`` ``[B]``.
        target: ``[B, F, D]`` latents to predict, ``target_lengths`` ``[B]``.

    Not frozen: Lightning moves a batch to its device by replacing the fields.
    """

    voice: torch.Tensor
    voice_lengths: torch.Tensor
    text: torch.Tensor
    text_lengths: torch.Tensor
    target: torch.Tensor
    target_lengths: torch.Tensor

    @property
    def size(self) -> int:
        return self.target.shape[0]


def collate_examples(batch: list[dict], pad_id: int) -> TeacherBatch:
    """Pad a list of ``TeacherExampleDataset`` examples into a ``TeacherBatch``."""

    def pad(tensors: list[torch.Tensor], value: float | int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = torch.tensor([t.shape[0] for t in tensors])
        longest = max(1, int(lengths.max()))
        out = tensors[0].new_full((len(tensors), longest, *tensors[0].shape[1:]), value)
        for row, tensor in enumerate(tensors):
            out[row, : tensor.shape[0]] = tensor
        return out, lengths

    return TeacherBatch(
        *pad([ex["voice"] for ex in batch]),
        *pad([ex["tokens"] for ex in batch], pad_id),
        *pad([ex["target"] for ex in batch]),
    )
