"""Zero-shot TTS test sets: which voice prompt to clone and which text to say, item by item.

Three formats:

- the LibriSpeech-PC cross-sentence list (1127 items, shipped in ``lists/``; audio from a local
  LibriSpeech test-clean),
- Seed-TTS meta files (``utt|prompt_text|prompt_wav|target_text[|ground_truth_wav]``),
- any pockettts manifest, where each utterance is said again in the voice of another utterance of
  its speaker (the demo corpus's test split is the offline default).

An item whose audio file does not exist is left out and listed in ``TestSet.missing``, so one lost
file costs one item, not the run; malformed lines are errors that name the file and line.

``prompt_dir`` (LibriSpeech-PC and Seed-TTS) takes each item's prompt from a folder of per-item
files instead of the set's own recording: ``<prompt_dir>/<key>.wav`` (or ``.flac``), the key being
the prompt utterance id (LibriSpeech-PC) or the prompt wav's file name without suffix (Seed-TTS).
That is how published evaluations swap in enhanced prompts (Kyutai's open recipe: the LibriSpeech
prompts cleaned with Adobe Enhance Speech). Such a file is a deliberate choice of the run, so one
that is absent is an error naming the item, not an item left out.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pockettts.audio import SAMPLE_RATE, TARGET_LUFS, audio_info, load_audio
from pockettts.data.manifest import ManifestItem, read_manifest

LISTS_DIR = Path(__file__).with_name("lists")
LIBRISPEECH_PC_LIST = LISTS_DIR / "librispeech_pc_test_clean_cross_sentence.lst"
DEMO_TEST_MANIFEST = "clean/test.jsonl"  # inside the demo corpus directory (recipes/tiny/run.sh)
TESTSETS = ("librispeech_pc", "seed_tts", "demo", "<manifest>.jsonl")
PROMPT_SUFFIXES = (".wav", ".flac")


class TestSetError(ValueError):
    """A test-set file that cannot be read; the message names the file and line."""

    __test__ = False  # not a pytest test class despite the name


@dataclass(frozen=True)
class EvalItem:
    """One test: say ``text`` in the voice of ``prompt_audio``.

    ``prompt_text`` is the prompt's transcript where known; ``reference_audio`` is a recording of
    ``text`` by the prompt's speaker (ground truth for SIM / WER baselines) where the set has one.
    ``*_offset`` / ``*_duration`` (seconds) select a window of the file; ``None`` reads to its end.
    """

    id: str
    text: str
    prompt_audio: Path | None
    prompt_text: str | None = None
    reference_audio: Path | None = None
    speaker: str | None = None
    prompt_offset: float = 0.0
    prompt_duration: float | None = None
    reference_offset: float = 0.0
    reference_duration: float | None = None


@dataclass
class TestSet:
    """The usable items of a set, plus what was left out and why.

    ``missing``: ``(item id, path)`` for each audio file that does not exist (the item is left out);
    ``skipped``: ``(item id, reason)`` for items left out for another reason (a manifest speaker with
    a single utterance has no other utterance to prompt with).
    """

    __test__ = False

    name: str
    items: list[EvalItem]
    missing: list[tuple[str, str]]
    skipped: list[tuple[str, str]] = field(default_factory=list)


def load_prompt_audio(
    item: EvalItem, sample_rate: int = SAMPLE_RATE, target_lufs: float | None = TARGET_LUFS
) -> torch.Tensor:
    """The item's prompt window as ``[1, T]`` at ``sample_rate`` (see :func:`pockettts.audio.load_audio`)."""
    if item.prompt_audio is None:
        raise ValueError(f"item {item.id!r} has no prompt audio")
    return load_audio(item.prompt_audio, sample_rate, item.prompt_offset, item.prompt_duration, target_lufs)


def load_reference_audio(
    item: EvalItem, sample_rate: int = SAMPLE_RATE, target_lufs: float | None = TARGET_LUFS
) -> torch.Tensor:
    """The item's ground-truth recording as ``[1, T]`` at ``sample_rate``."""
    if item.reference_audio is None:
        raise ValueError(f"item {item.id!r} has no reference audio")
    return load_audio(
        item.reference_audio, sample_rate, item.reference_offset, item.reference_duration, target_lufs
    )


def prompt_file(prompt_dir: Path, key: str, where: str) -> Path:
    """``<prompt_dir>/<key>.wav`` or ``.flac``; a ``TestSetError`` starting with ``where`` (the
    list line and item) when neither exists."""
    for suffix in PROMPT_SUFFIXES:
        path = prompt_dir / f"{key}{suffix}"
        if path.is_file():
            return path
    raise TestSetError(f"{where}: no prompt file {key}.wav or {key}.flac in prompt_dir {prompt_dir}")


def _prompt_folder(prompt_dir: str | Path | None) -> Path | None:
    if prompt_dir is not None and not Path(prompt_dir).is_dir():
        raise FileNotFoundError(f"prompt_dir not found: {prompt_dir} (a folder of per-item prompt files)")
    return None if prompt_dir is None else Path(prompt_dir)


def _keep_if_present(item: EvalItem, items: list[EvalItem], missing: list[tuple[str, str]]) -> None:
    absent = [str(p) for p in (item.prompt_audio, item.reference_audio) if p is not None and not p.is_file()]
    missing.extend((item.id, path) for path in absent)
    if not absent:
        items.append(item)


# --- LibriSpeech-PC ------------------------------------------------------------------------------------


def _librispeech_split_dir(root: Path) -> Path:
    """``root`` may be the test-clean folder itself, ``LibriSpeech/`` or the folder holding that."""
    if not root.is_dir():
        raise FileNotFoundError(f"LibriSpeech root not found: {root} (expected LibriSpeech test-clean)")
    for candidate in (root / "test-clean", root / "LibriSpeech" / "test-clean"):
        if candidate.is_dir():
            return candidate
    return root


def librispeech_audio_path(split_dir: Path, utterance_id: str) -> Path:
    """``<split>/<speaker>/<chapter>/<utterance>.flac`` (``.wav`` if only that exists)."""
    parts = utterance_id.split("-")
    if len(parts) != 3:
        raise ValueError(f"not a LibriSpeech utterance id: {utterance_id!r} (expected speaker-chapter-index)")
    flac = split_dir / parts[0] / parts[1] / f"{utterance_id}.flac"
    wav = flac.with_suffix(".wav")
    return wav if not flac.is_file() and wav.is_file() else flac


def load_librispeech_pc(
    list_path: str | Path | None, librispeech_root: str | Path, prompt_dir: str | Path | None = None
) -> TestSet:
    """The LibriSpeech-PC cross-sentence list (``None``: the shipped 1127-item list) over local audio.

    Item id = target utterance id; prompt = the prompt utterance and its transcript (its recording,
    or ``<prompt_dir>/<prompt utterance id>.wav|flac``); reference = the target utterance's
    recording; speaker = the LibriSpeech speaker id.
    """
    list_path = Path(list_path) if list_path is not None else LIBRISPEECH_PC_LIST
    split_dir = _librispeech_split_dir(Path(librispeech_root))
    prompts = _prompt_folder(prompt_dir)
    items: list[EvalItem] = []
    missing: list[tuple[str, str]] = []
    for number, line in _numbered_lines(list_path):
        fields = line.split("\t")
        if len(fields) != 6:
            raise TestSetError(
                f"{list_path}:{number}: expected 6 tab-separated fields (prompt_utt_id, "
                f"prompt_duration_s, prompt_text, target_utt_id, target_duration_s, target_text), "
                f"got {len(fields)}"
            )
        prompt_id, _, prompt_text, target_id, _, target_text = fields
        try:
            prompt_path = librispeech_audio_path(split_dir, prompt_id)
            target_path = librispeech_audio_path(split_dir, target_id)
        except ValueError as err:
            raise TestSetError(f"{list_path}:{number}: {err}") from err
        if prompts is not None:
            prompt_path = prompt_file(prompts, prompt_id, f"{list_path}:{number}: item {target_id}")
        item = EvalItem(
            id=target_id,
            text=target_text,
            prompt_audio=prompt_path,
            prompt_text=prompt_text,
            reference_audio=target_path,
            speaker=prompt_id.split("-")[0],
        )
        _keep_if_present(item, items, missing)
    return TestSet("librispeech_pc", items, missing)


def _numbered_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, line)`` of a list file's non-blank lines, newline removed."""
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.rstrip("\r\n")
            if line.strip():
                yield number, line


# --- Seed-TTS -----------------------------------------------------------------------------------------


def load_seed_tts(
    meta_path: str | Path, audio_root: str | Path | None = None, prompt_dir: str | Path | None = None
) -> TestSet:
    """A Seed-TTS meta file: ``utt|prompt_text|prompt_wav|target_text[|ground_truth_wav]`` per line.

    Relative wav paths are relative to ``audio_root``, by default the meta file's folder; with
    ``prompt_dir`` the prompt is ``<prompt_dir>/<prompt_wav's name without suffix>.wav|flac``.
    """
    meta_path = Path(meta_path)
    if not meta_path.is_file():
        raise FileNotFoundError(f"Seed-TTS meta file not found: {meta_path}")
    root = Path(audio_root) if audio_root is not None else meta_path.parent
    prompts = _prompt_folder(prompt_dir)
    items: list[EvalItem] = []
    missing: list[tuple[str, str]] = []
    for number, line in _numbered_lines(meta_path):
        fields = line.split("|")
        if len(fields) not in (4, 5) or not fields[0] or not fields[2]:
            raise TestSetError(
                f"{meta_path}:{number}: expected utt|prompt_text|prompt_wav|target_text"
                f"[|ground_truth_wav], got {len(fields)} field(s): {line[:120]!r}"
            )
        utt, prompt_text, prompt_wav, target_text = fields[:4]
        reference = root / fields[4] if len(fields) == 5 and fields[4] else None
        prompt_path = root / prompt_wav  # an absolute prompt_wav replaces root
        if prompts is not None:
            prompt_path = prompt_file(prompts, Path(prompt_wav).stem, f"{meta_path}:{number}: item {utt}")
        item = EvalItem(
            id=utt,
            text=target_text,
            prompt_audio=prompt_path,
            prompt_text=prompt_text,
            reference_audio=reference,
        )
        _keep_if_present(item, items, missing)
    return TestSet("seed_tts", items, missing)


# --- any manifest -----------------------------------------------------------------------------------


def _prompt_window(
    prompt: ManifestItem, length: float | None, prompt_seconds: float | None
) -> tuple[float | None, str | None]:
    """``(duration, transcript)`` of the prompt (``length`` seconds long) cut to at most ``prompt_seconds``.

    With sentence ``segments`` the cut falls after the last whole sentence that fits, so the
    transcript matches the audio; a cut inside the first sentence or without segments has no
    known transcript (``None``) unless it keeps the whole utterance.
    """
    if not prompt_seconds or prompt_seconds <= 0 or (length is not None and length <= prompt_seconds):
        return length, prompt.text
    fitting = [s for s in prompt.segments if s.end <= prompt_seconds]
    if fitting:
        return fitting[-1].end, " ".join(s.text for s in fitting)
    return float(prompt_seconds), None


def load_manifest_testset(
    manifest_path: str | Path, prompt_seconds: float | None = 5.0, seed: int = 0, name: str | None = None
) -> TestSet:
    """Each manifest utterance, said in the voice of another utterance of the same speaker.

    The prompt utterance is drawn per item from ``seed`` and the item id (independent of line
    order) and cut to at most ``prompt_seconds`` (``None`` or 0: whole utterance); the item's own
    recording is the reference. Speakers with one utterance are listed in ``skipped``.
    """
    manifest_path = Path(manifest_path)
    entries = read_manifest(manifest_path)
    by_speaker: dict[str, list[ManifestItem]] = defaultdict(list)
    for entry in entries:
        by_speaker[entry.speaker].append(entry)
    root = manifest_path.parent
    items: list[EvalItem] = []
    missing: list[tuple[str, str]] = []
    skipped: list[tuple[str, str]] = []
    for entry in entries:
        others = sorted((o for o in by_speaker[entry.speaker] if o.id != entry.id), key=lambda o: o.id)
        if not others:
            skipped.append((entry.id, f"speaker {entry.speaker!r} has no other utterance to prompt with"))
            continue
        prompt = random.Random(f"{seed}:{entry.id}").choice(others)
        prompt_path = prompt.resolve_audio(root)
        length = prompt.duration
        if length is None and prompt_path.is_file():
            length = audio_info(prompt_path).duration - prompt.offset
        prompt_duration, prompt_text = _prompt_window(prompt, length, prompt_seconds)
        item = EvalItem(
            id=entry.id,
            text=entry.text,
            prompt_audio=prompt_path,
            prompt_text=prompt_text,
            reference_audio=entry.resolve_audio(root),
            speaker=entry.speaker,
            prompt_offset=prompt.offset,
            prompt_duration=prompt_duration,
            reference_offset=entry.offset,
            reference_duration=entry.duration,
        )
        _keep_if_present(item, items, missing)
    return TestSet(name or manifest_path.stem, items, missing, skipped)


# --- by name -----------------------------------------------------------------------------------------


def load_testset(name_or_path: str | Path, **options) -> TestSet:
    """A test set by name or manifest path.

    - ``"librispeech_pc"``: options ``librispeech_root`` (required), ``list_path`` (default: shipped
      list), ``prompt_dir`` (per-item prompt files, see the module docstring);
    - ``"seed_tts"``: options ``meta_path`` (required), ``audio_root``, ``prompt_dir``;
    - ``"demo"``: the demo corpus test split, ``<data_dir>/clean/test.jsonl`` (``data_dir`` default
      ``data/demo``), plus the manifest options below;
    - a ``.jsonl`` path: :func:`load_manifest_testset` (options ``prompt_seconds``, ``seed``).
    """
    key = str(name_or_path)
    if key == "librispeech_pc":
        if options.get("librispeech_root") is None:
            raise ValueError("testset 'librispeech_pc' needs librispeech_root=<your LibriSpeech test-clean>")
        return load_librispeech_pc(options.pop("list_path", None), **options)
    if key == "seed_tts":
        if options.get("meta_path") is None:
            raise ValueError("testset 'seed_tts' needs meta_path=<seed-tts-eval .../meta.lst>")
        return load_seed_tts(**options)
    if key == "demo":
        manifest = Path(options.pop("data_dir", "data/demo")) / DEMO_TEST_MANIFEST
        if not manifest.is_file():
            raise FileNotFoundError(
                f"demo test manifest not found: {manifest} (build it with bash recipes/tiny/run.sh, or "
                "python -m pockettts.data demo + validate)"
            )
        return load_manifest_testset(manifest, name="demo", **options)
    if key.endswith(".jsonl"):
        return load_manifest_testset(key, **options)
    raise ValueError(f"unknown test set {key!r}; choose one of {', '.join(TESTSETS)}")
