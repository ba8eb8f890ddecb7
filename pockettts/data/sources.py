"""Corpus sources: turn a Hugging Face dataset or a local folder into a manifest.

Sources only convert; :mod:`pockettts.data.validate` then checks every item. Bad rows (no audio,
undecodable bytes) are skipped and listed, never fatal, and conversion resumes where it stopped.
"""

from __future__ import annotations

import csv
import functools
import logging
import os
import re
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from tqdm import tqdm

from pockettts.audio import SAMPLE_RATE, AudioError, load_audio, save_audio
from pockettts.data.manifest import ManifestAppender, ManifestItem, write_manifest
from pockettts.data.parallel import ordered_map

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".opus")
# Transcript files beside each audio file, most specific first (LibriTTS ships both).
TRANSCRIPT_SUFFIXES = (".normalized.txt", ".txt", ".lab", ".original.txt")


@dataclass
class HFColumns:
    """Which dataset columns hold what. ``None`` means the dataset has no such column."""

    audio: str = "audio"
    text: str = "text"
    speaker: str | None = "speaker_id"
    id: str | None = "id"
    language: str | None = None
    offset: str | None = None
    duration: str | None = None


@dataclass
class HFSourceConfig:
    """Where a Hugging Face corpus lives and how its rows map onto the manifest."""

    name: str
    config: str | None = None
    split: str = "train"
    columns: HFColumns = field(default_factory=HFColumns)
    data_files: list[str] | None = None
    data_dir: str | None = None
    # Root for audio columns that hold relative file paths (e.g. HiFiTTS-2's audio_filepath).
    audio_root: str | None = None
    # Keep only rows whose column equals a value, e.g. {"set": "train"} for HiFiTTS-2.
    where: dict[str, str] = field(default_factory=dict)
    language: str = "en"
    max_items: int | None = None


# Column layouts of the corpora the recipes use. LibriTTS-R as published on the hub
# (mythicinfinity/libritts_r); HiFiTTS-2 as NVIDIA's manifest rows (nvidia/hifitts-2), whose audio
# is downloaded separately and referenced by path under ``audio_root`` with per-row offsets.
PRESETS: dict[str, HFSourceConfig] = {
    "libritts_r": HFSourceConfig(
        name="mythicinfinity/libritts_r",
        config="clean",
        split="train.clean.360",
        columns=HFColumns(audio="audio", text="text_normalized", speaker="speaker_id", id="id"),
    ),
    "hifitts2": HFSourceConfig(
        name="json",
        split="train",
        columns=HFColumns(
            audio="audio_filepath",
            text="normalized_text",
            speaker="speaker",
            id=None,
            offset="offset",
            duration="duration",
        ),
        where={"set": "train"},
    ),
}

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(text: str) -> str:
    """A filesystem-safe version of an id or speaker name."""
    return _UNSAFE.sub("_", text).strip("_") or "item"


def load_hf_dataset(source: HFSourceConfig):
    """Load one split as a ``datasets.Dataset``: a ``save_to_disk`` folder, a hub id, or a builder
    name such as ``parquet``/``json``/``audiofolder`` with ``data_files``/``data_dir``."""
    import datasets

    path = Path(source.name)
    if path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()):
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            if source.split not in loaded:
                raise KeyError(f"split {source.split!r} not in {path}; available: {list(loaded)}")
            loaded = loaded[source.split]
        return loaded
    return datasets.load_dataset(
        source.name,
        source.config,
        split=source.split,
        data_files=source.data_files,
        data_dir=source.data_dir,
    )


def _check_columns(dataset, columns: HFColumns, where: Mapping[str, str]) -> None:
    wanted = [c for c in vars(columns).values() if c is not None] + list(where)
    missing = [c for c in wanted if c not in dataset.column_names]
    if missing:
        raise KeyError(
            f"dataset has no column(s) {missing}; available: {dataset.column_names}. "
            "Map them with the columns option (e.g. columns.text=<name>)."
        )


def manifest_from_hf(
    source: HFSourceConfig,
    output: str | os.PathLike,
    dataset=None,
    progress: bool = True,
    workers: int = 1,
) -> dict[str, int]:
    """Convert a Hugging Face dataset split into a manifest at ``output``.

    Audio stored in the dataset (an ``Audio`` column) is decoded, made mono, resampled to 24 kHz,
    loudness-normalised and written as FLAC under ``<output dir>/audio/<speaker>/``. Audio given as
    file paths is referenced in place (with its offset/duration window), since copying a corpus of
    long chapter files would double its disk footprint.

    ``workers`` processes convert rows in parallel (one torch thread each); the manifest is written
    in dataset order whatever their number, so it is the serial run's. Rows already in ``output``
    (by id) are skipped, so an interrupted conversion resumes; rows that failed are retried, and
    listed once in ``<output>.skipped.txt``.

    Returns:
        counts: ``written``, ``resumed`` (already present), ``filtered`` (``where``), ``skipped``.
    """
    import datasets

    output = Path(output)
    dataset = load_hf_dataset(source) if dataset is None else dataset
    cols = source.columns
    _check_columns(dataset, cols, source.where)
    embedded_audio = isinstance(dataset.features[cols.audio], datasets.Audio)
    if embedded_audio:
        # Decode ourselves (soundfile) rather than through datasets' optional decoder.
        dataset = dataset.cast_column(cols.audio, datasets.Audio(decode=False))
    convert = functools.partial(
        _convert_row,
        source=source,
        embedded_audio=embedded_audio,
        audio_root=Path(source.audio_root) if source.audio_root else None,
        audio_dir=output.parent / "audio",
        manifest_dir=output.parent,
    )
    counts = {"written": 0, "resumed": 0, "filtered": 0, "skipped": 0}
    skipped_log = output.with_suffix(".skipped.txt")
    listed = (
        {line.split("\t")[0] for line in skipped_log.read_text().splitlines()}
        if skipped_log.exists()
        else set()
    )

    def rows_to_convert(done: set[str]):
        total = len(dataset) if source.max_items is None else min(len(dataset), source.max_items)
        for index in tqdm(range(total), desc=f"hf:{source.name}", disable=not progress):
            row = dataset[index]
            if any(str(row[c]) != str(v) for c, v in source.where.items()):
                counts["filtered"] += 1
                continue
            item_id = safe_name(str(row[cols.id])) if cols.id else f"{source.split}_{index:08d}"
            if item_id in done:
                counts["resumed"] += 1
                continue
            yield item_id, str(row[cols.speaker]) if cols.speaker else "unknown", row

    # One torch thread per process: ``workers`` processes use ``workers`` cores.
    pool = (
        ProcessPoolExecutor(workers, initializer=torch.set_num_threads, initargs=(1,))
        if workers > 1
        else None
    )
    with (
        ManifestAppender(output) as sink,
        open(skipped_log, "a", encoding="utf-8") as skipped,
        pool or nullcontext(),
    ):
        converted = ordered_map(convert, rows_to_convert(sink.existing_ids()), pool, ahead=4 * workers)
        for item_id, result in converted:
            if isinstance(result, ManifestItem):
                sink.append(result)
                counts["written"] += 1
                continue
            counts["skipped"] += 1
            if item_id not in listed:
                skipped.write(f"{item_id}\t{result}\n")
    log.info("hf source %s -> %s: %s", source.name, output, counts)
    return counts


def _convert_row(
    task: tuple[str, str, dict],
    source: HFSourceConfig,
    embedded_audio: bool,
    audio_root: Path | None,
    audio_dir: Path,
    manifest_dir: Path,
) -> tuple[str, ManifestItem | str]:
    """``(item id, speaker, row)`` -> ``(item id, its manifest item)``, or ``(item id, why not)``
    for a row that cannot be converted (a message: worker processes return it, never raise)."""
    item_id, speaker, row = task
    try:
        item = _hf_row_item(
            row, item_id, speaker, source, embedded_audio, audio_root, audio_dir, manifest_dir
        )
    except (AudioError, ValueError, TypeError) as err:
        return item_id, str(err)
    return item_id, item


def _hf_row_item(
    row: dict,
    item_id: str,
    speaker: str,
    source: HFSourceConfig,
    embedded_audio: bool,
    audio_root: Path | None,
    audio_dir: Path,
    manifest_dir: Path,
) -> ManifestItem:
    cols = source.columns
    text = row[cols.text]
    if not isinstance(text, str):
        raise ValueError(f"text column {cols.text!r} holds {type(text).__name__}, not a string")
    language = str(row[cols.language]) if cols.language else source.language
    if embedded_audio:
        value = row[cols.audio] or {}
        encoded = value.get("bytes")
        if encoded is None and value.get("path"):
            encoded = Path(_resolve(value["path"], audio_root)).read_bytes()
        if encoded is None:
            raise ValueError("row has neither audio bytes nor an audio path")
        wav = load_audio(encoded, SAMPLE_RATE)
        path = save_audio(audio_dir / safe_name(speaker) / f"{item_id}.flac", wav, SAMPLE_RATE)
        return ManifestItem(
            id=item_id,
            audio=os.path.relpath(path, manifest_dir),
            text=text,
            speaker=speaker,
            language=language,
        )
    path = _resolve(str(row[cols.audio]), audio_root)
    return ManifestItem(
        id=item_id,
        audio=os.path.relpath(Path(path).resolve(), manifest_dir.resolve()),
        text=text,
        speaker=speaker,
        language=language,
        offset=float(row[cols.offset]) if cols.offset else 0.0,
        duration=float(row[cols.duration]) if cols.duration else None,
    )


def _resolve(path: str, root: Path | None) -> str:
    return str(root / path) if root is not None and not Path(path).is_absolute() else path


def manifest_from_folder(
    root: str | os.PathLike,
    output: str | os.PathLike,
    layout: str = "auto",
    speaker: str | None = None,
    language: str = "en",
) -> dict[str, int]:
    """Build a manifest from a local corpus folder.

    Layouts:
        ``ljspeech``: ``metadata.csv`` with ``id|text[|normalized text]`` rows and ``wavs/<id>.wav``;
            one speaker (``speaker`` or the folder name).
        ``pairs``: every audio file with a transcript beside it (``.normalized.txt``, ``.txt`` or
            ``.lab``); the speaker is the first folder under ``root`` (LibriTTS, VCTK layouts) or
            ``speaker`` when given.
        ``auto``: ``ljspeech`` when ``metadata.csv`` exists, else ``pairs``.

    Returns counts: ``written`` and ``skipped`` (audio without transcript, listed in
    ``<output>.skipped.txt``).
    """
    root, output = Path(root), Path(output)
    if not root.is_dir():
        raise FileNotFoundError(f"corpus folder not found: {root}")
    if layout == "auto":
        layout = "ljspeech" if (root / "metadata.csv").is_file() else "pairs"
    if layout == "ljspeech":
        items, skipped = _ljspeech_items(root, speaker or root.name, language)
    elif layout == "pairs":
        items, skipped = _pair_items(root, speaker, language)
    else:
        raise ValueError(f"unknown folder layout {layout!r}; use auto, ljspeech or pairs")
    manifest_dir = output.parent.resolve()
    items = [replace(i, audio=os.path.relpath(Path(i.audio).resolve(), manifest_dir)) for i in items]
    write_manifest(output, items)
    output.with_suffix(".skipped.txt").write_text("".join(f"{s}\n" for s in skipped))
    return {"written": len(items), "skipped": len(skipped)}


def _ljspeech_items(root: Path, speaker: str, language: str) -> tuple[list[ManifestItem], list[str]]:
    items, skipped = [], []
    with open(root / "metadata.csv", encoding="utf-8", newline="") as handle:
        for number, row in enumerate(csv.reader(handle, delimiter="|", quoting=csv.QUOTE_NONE), 1):
            if len(row) < 2:
                skipped.append(f"metadata.csv:{number}\texpected id|text, got {row!r}")
                continue
            text = row[2] if len(row) > 2 and row[2].strip() else row[1]
            audio = next(
                (
                    root / "wavs" / f"{row[0]}{s}"
                    for s in AUDIO_SUFFIXES
                    if (root / "wavs" / f"{row[0]}{s}").exists()
                ),
                root / "wavs" / f"{row[0]}.wav",
            )
            # A missing file stays in the manifest: validation reports it by id.
            items.append(
                ManifestItem(id=row[0], audio=str(audio), text=text, speaker=speaker, language=language)
            )
    return items, skipped


def _pair_items(root: Path, speaker: str | None, language: str) -> tuple[list[ManifestItem], list[str]]:
    items, skipped = [], []
    audio_files = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    for audio in audio_files:
        stem = audio.with_suffix("")
        transcript = next(
            (Path(f"{stem}{s}") for s in TRANSCRIPT_SUFFIXES if Path(f"{stem}{s}").is_file()), None
        )
        if transcript is None:
            skipped.append(f"{audio}\tno transcript ({', '.join(TRANSCRIPT_SUFFIXES)})")
            continue
        relative = audio.relative_to(root)
        item_speaker = speaker or (relative.parts[0] if len(relative.parts) > 1 else root.name)
        item_id = safe_name(str(relative.with_suffix("")).replace(os.sep, "_"))
        items.append(
            ManifestItem(
                id=item_id,
                audio=str(audio),
                text=transcript.read_text(encoding="utf-8").strip(),
                speaker=item_speaker,
                language=language,
            )
        )
    return items, skipped
