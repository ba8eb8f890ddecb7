"""Whisper forced alignment of reference transcripts, checked against the demo corpus's exact
sentence boundaries."""

from __future__ import annotations

from pockettts.data.align import WhisperAligner, align_manifest
from pockettts.data.manifest import read_manifest


def test_words_follow_the_transcript_and_land_on_sentence_boundaries(tiny_corpus, tiny_en, tmp_path):
    items = [i for i in read_manifest(tiny_corpus / "train.jsonl") if len(i.segments or []) >= 2][:2]
    subset = tiny_corpus / "two.jsonl"
    subset.write_text(
        "".join(item_line for item_line in _lines(tiny_corpus / "train.jsonl", {i.id for i in items}))
    )
    out = tmp_path / "aligned.jsonl"
    counts = align_manifest(subset, out, WhisperAligner(tiny_en[0]), progress=False)
    assert counts == {"aligned": 2, "kept": 0, "too_long": 0, "unreadable": 0}
    for item in read_manifest(out):
        words = item.words
        assert [w.text for w in words] == item.text.split()  # the reference words, in order
        starts = [w.start for w in words]
        assert starts == sorted(starts) and all(w.end >= w.start for w in words)
        # the second sentence's first word starts near the true (synthesised) sentence boundary
        second = item.segments[1]
        first_word = next(
            w for w in words if w.text == second.text.split()[0] and w.start > item.segments[0].start
        )
        assert abs(first_word.start - second.start) < 0.4, (first_word, second)
    again = align_manifest(out, tmp_path / "again.jsonl", WhisperAligner(tiny_en[0]), progress=False)
    assert again["kept"] == 2 and again["aligned"] == 0  # existing alignments are kept


def _lines(path, ids):
    import json

    for line in open(path):
        if json.loads(line)["id"] in ids:
            yield line
