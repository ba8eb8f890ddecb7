"""The demo corpus builder keeps its promises: speakers, disjoint splits, exact boundaries."""

import json

import pytest
import torch

from pockettts.audio import load_audio
from pockettts.data.manifest import read_manifest
from pockettts.data.synthetic import (
    DemoCorpusConfig,
    SynthesisError,
    build_demo_corpus,
    read_sentences,
    speaker_name,
)
from tests.support import TINY_VOICES


def _split_items(root):
    return {s: read_manifest(root / f"{s}.jsonl") for s in ("train", "valid", "test")}


def test_speakers_and_splits(tiny_corpus):
    items = _split_items(tiny_corpus)
    expected = {speaker_name(v) for v in TINY_VOICES}
    sentences = {}
    for split, split_items in items.items():
        assert split_items, split
        assert {i.speaker for i in split_items} == expected
        sentences[split] = {seg.text for i in split_items for seg in i.segments}
    assert not sentences["train"] & sentences["valid"]
    assert not sentences["train"] & sentences["test"]
    assert not sentences["valid"] & sentences["test"]
    bundled = set(read_sentences(None))
    assert set().union(*sentences.values()) <= bundled
    summary = json.loads((tiny_corpus / "corpus.json").read_text())
    assert summary["speakers"] == sorted(expected, key=[speaker_name(v) for v in TINY_VOICES].index)


def test_segments_are_exact_sentence_boundaries(tiny_corpus):
    for item in _split_items(tiny_corpus)["train"][:6]:
        assert len(item.segments) >= 2
        assert item.text == " ".join(seg.text for seg in item.segments)
        wav = load_audio(item.resolve_audio(tiny_corpus))
        assert wav.shape[-1] / 24000 == pytest.approx(item.duration, abs=1e-3)

        def rms(start, end, wav=wav):
            piece = wav[0, int(start * 24000) : int(end * 24000)]
            return float(piece.pow(2).mean().sqrt())

        speech = [rms(seg.start + 0.03, seg.end - 0.03) for seg in item.segments]
        gaps = [rms(a.end + 0.01, b.start - 0.01) for a, b in zip(item.segments, item.segments[1:])]
        assert min(speech) > 0.01
        assert max(gaps) == 0.0  # pauses are digital silence inserted between sentences
        assert rms(0, item.segments[0].start - 0.01) == 0.0


def test_build_is_deterministic_and_cached(tmp_path, tiny_config, tiny_corpus):
    again = tmp_path / "again"
    build_demo_corpus(again, tiny_config, progress=False)
    for split in ("train", "valid", "test"):
        assert (again / f"{split}.jsonl").read_text() == (tiny_corpus / f"{split}.jsonl").read_text()
    first = _split_items(again)["train"][0]
    assert torch.equal(load_audio(first.resolve_audio(again)), load_audio(first.resolve_audio(tiny_corpus)))

    stamp = (again / "train.jsonl").stat().st_mtime_ns
    build_demo_corpus(again, tiny_config, progress=False)
    assert (again / "train.jsonl").stat().st_mtime_ns == stamp  # reused, not rebuilt

    reseeded = DemoCorpusConfig(**{**vars(tiny_config), "seed": 8})
    build_demo_corpus(again, reseeded, progress=False)
    assert (again / "train.jsonl").read_text() != (tiny_corpus / "train.jsonl").read_text()


def test_unknown_engine_fails_before_any_work(tmp_path):
    with pytest.raises(SynthesisError, match="unknown engine in voice 'piper:amy'"):
        build_demo_corpus(tmp_path, DemoCorpusConfig(voices=["piper:amy"], max_sentences=10), progress=False)
    assert not (tmp_path / "train.jsonl").exists()
