"""Torch datasets over a manifest: fixed-length random crops (VAE) and whole utterances."""

from __future__ import annotations

import random
from pathlib import Path

import torch
from torch.utils.data import Dataset

from pockettts.audio import SAMPLE_RATE, AudioError, load_audio
from pockettts.data.manifest import ManifestItem, read_manifest


class ManifestDataset(Dataset):
    """Base: a validated manifest whose audio is loaded through :func:`pockettts.audio.load_audio`."""

    def __init__(self, manifest: str | Path, sample_rate: int = SAMPLE_RATE):
        self.manifest = Path(manifest)
        self.root = self.manifest.parent
        self.items: list[ManifestItem] = read_manifest(self.manifest)
        if not self.items:
            raise ValueError(f"manifest {self.manifest} has no items")
        missing = [i.id for i in self.items if i.duration is None]
        if missing:
            raise ValueError(
                f"{len(missing)} item(s) of {self.manifest} have no duration (e.g. {missing[0]}): "
                "run `python -m pockettts.data validate` on it first"
            )
        self.sample_rate = sample_rate

    def __len__(self) -> int:
        return len(self.items)

    @property
    def durations(self) -> list[float]:
        return [item.duration for item in self.items]

    def load(self, item: ManifestItem) -> torch.Tensor:
        """``[1, T]`` waveform of ``item``; errors name the item."""
        try:
            return load_audio(item.resolve_audio(self.root), self.sample_rate, item.offset, item.duration)
        except AudioError as err:
            raise AudioError(f"item {item.id} of {self.manifest}: {err}") from err


class AudioCropDataset(ManifestDataset):
    """Random fixed-length crops, deterministic given ``(seed, epoch, index)``.

    Keys are an item index or ``(index, epoch)`` (as yielded by a sampler with ``tag_epoch``), so
    crops change every epoch even inside persistent loader workers. Items shorter than the crop
    are zero-padded at the end; ``length`` says how many samples are real. Each key returns
    ``{"audio": [1, T_crop], "length": int, "id": str}``.
    """

    def __init__(
        self,
        manifest: str | Path,
        crop_seconds: float,
        sample_rate: int = SAMPLE_RATE,
        seed: int = 0,
        random_crop: bool = True,
    ):
        super().__init__(manifest, sample_rate)
        self.crop = int(round(crop_seconds * sample_rate))
        self.seed = seed
        self.random_crop = random_crop

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        item = self.items[index]
        wav = self.load(item)
        total = wav.shape[-1]
        if total >= self.crop:
            span = total - self.crop
            rng = random.Random(f"{self.seed}/{epoch}/{index}")
            start = rng.randint(0, span) if self.random_crop else span // 2
            return {"audio": wav[:, start : start + self.crop], "length": self.crop, "id": item.id}
        padded = torch.zeros(1, self.crop)
        padded[:, :total] = wav
        return {"audio": padded, "length": total, "id": item.id}


class UtteranceDataset(ManifestDataset):
    """Whole utterances with their transcript and metadata."""

    def __getitem__(self, index: int) -> dict:
        item = self.items[index]
        return {
            "audio": self.load(item),
            "id": item.id,
            "text": item.text,
            "speaker": item.speaker,
            "language": item.language,
            "segments": item.segments,
            "words": item.words,
        }


def collate_audio(batch: list[dict]) -> dict:
    """Stack examples, right-padding audio with zeros.

    Returns ``audio [B, 1, T]``, ``lengths [B]`` (valid samples), and every other key as a list.
    """
    lengths = torch.tensor([ex.get("length", ex["audio"].shape[-1]) for ex in batch])
    longest = max(ex["audio"].shape[-1] for ex in batch)
    audio = torch.zeros(len(batch), 1, longest)
    for row, ex in enumerate(batch):
        audio[row, :, : ex["audio"].shape[-1]] = ex["audio"]
    out = {"audio": audio, "lengths": lengths}
    for key in batch[0]:
        if key not in ("audio", "length"):
            out[key] = [ex[key] for ex in batch]
    return out
