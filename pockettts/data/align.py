r"""Word alignments of a manifest's *reference* transcripts, from Whisper's cross-attention.

For corpora without word timings (the demo corpus has exact sentence boundaries; most real corpora
have nothing): each item's transcript is forced through Whisper's decoder and the word boundaries
come from dynamic time warping over its alignment heads (``whisper.timing.find_alignment``, what
``transcribe(word_timestamps=True)`` uses on its own hypotheses). The words are the reference
words, so prompt/target cuts never depend on recognition errors.

    pockettts-data align --manifest train.jsonl --out train.aligned.jsonl \
        --whisper checkpoints/whisper/tiny.en.pt
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch
from tqdm import tqdm

from pockettts.audio import AudioError, load_audio
from pockettts.data.manifest import ManifestItem, TimedSpan, read_manifest, write_manifest
from pockettts.devices import resolve_device
from pockettts.extras import import_eval_module
from pockettts.whisper import (
    WHISPER_SAMPLE_RATE,
    WHISPER_WINDOW_SECONDS,
    load_whisper_model,
    require_language,
)

log = logging.getLogger(__name__)


class WhisperAligner:
    """Forced word alignment with an openai-whisper model loaded from ``checkpoint`` onto ``device``
    (``auto``, ``cpu``, ``cuda``, ``cuda:N``)."""

    def __init__(self, checkpoint: str | Path, language: str = "en", device: str | torch.device = "cpu"):
        self.model = load_whisper_model(checkpoint, resolve_device(device))
        require_language(self.model, language, checkpoint)
        self.tokenizer = import_eval_module("whisper").tokenizer.get_tokenizer(
            self.model.is_multilingual,
            num_languages=self.model.num_languages,
            language=language,
            task="transcribe",
        )

    @torch.no_grad()
    def align(self, audio: torch.Tensor, text: str) -> list[TimedSpan]:
        """``audio`` ``[T]`` at 16 kHz (≤ 30 s) and its transcript -> one span per word (seconds)."""
        whisper = import_eval_module("whisper")
        if audio.shape[-1] > WHISPER_WINDOW_SECONDS * WHISPER_SAMPLE_RATE:
            raise ValueError(
                f"{audio.shape[-1] / WHISPER_SAMPLE_RATE:.1f} s is longer than one Whisper window"
            )
        samples = whisper.pad_or_trim(audio.float())
        mel = whisper.log_mel_spectrogram(samples, n_mels=self.model.dims.n_mels).to(self.model.device)
        frames = audio.shape[-1] // whisper.audio.HOP_LENGTH
        tokens = self.tokenizer.encode(" " + text.strip())
        spans: list[TimedSpan] = []
        for timing in whisper.timing.find_alignment(self.model, self.tokenizer, tokens, mel, frames):
            # Whisper splits punctuation off as its own "word" (no leading space): glue it back so
            # the spans are exactly the transcript's whitespace-separated words.
            if spans and not timing.word.startswith(" "):
                last = spans.pop()
                spans.append(TimedSpan(last.text + timing.word, last.start, max(last.end, float(timing.end))))
            elif timing.word.strip():
                spans.append(TimedSpan(timing.word.strip(), float(timing.start), float(timing.end)))
        return spans


def align_manifest(
    manifest: str | Path,
    out: str | Path,
    aligner: WhisperAligner,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, int]:
    """Write ``out``: ``manifest`` with ``words`` filled in. Items that already have words keep them
    (unless ``overwrite``); unreadable or > 30 s items are kept without words and counted."""
    manifest = Path(manifest)
    root = manifest.parent
    counts = {"aligned": 0, "kept": 0, "too_long": 0, "unreadable": 0}
    items: list[ManifestItem] = []
    for item in tqdm(read_manifest(manifest), desc="aligning", disable=not progress):
        if item.words and not overwrite:
            counts["kept"] += 1
            items.append(item)
            continue
        try:
            audio = load_audio(item.resolve_audio(root), WHISPER_SAMPLE_RATE, item.offset, item.duration)[0]
        except AudioError as err:
            log.warning("item %s: %s; kept without word alignments", item.id, err)
            counts["unreadable"] += 1
            items.append(item)
            continue
        if audio.shape[-1] > WHISPER_WINDOW_SECONDS * WHISPER_SAMPLE_RATE:
            counts["too_long"] += 1
            items.append(item)
            continue
        items.append(dataclasses.replace(item, words=aligner.align(audio, item.text)))
        counts["aligned"] += 1
    write_manifest(out, items)
    return counts
