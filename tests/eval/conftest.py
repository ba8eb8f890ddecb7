"""Fixtures of the evaluation tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture
def meta(tiny_corpus, tmp_path) -> Path:
    """A Seed-TTS meta file over the tiny corpus: two items (one with a ground-truth recording) and
    one whose prompt file does not exist."""
    rows = [json.loads(line) for line in (tiny_corpus / "train.jsonl").read_text().splitlines()]
    by_speaker = {}
    for row in rows:
        by_speaker.setdefault(row["speaker"], row)
    first, second = list(by_speaker.values())[:2]
    audio = lambda row: str(tiny_corpus / row["audio"])  # noqa: E731
    lines = [
        f"a1|{first['text']}|{audio(first)}|The bus is leaving now.|{audio(second)}",
        f"b2|{second['text']}|{audio(second)}|Quick, bring the map!",
        f"gone|x|{tmp_path / 'absent.wav'}|Nobody will say this.",
    ]
    path = tmp_path / "meta" / "meta.lst"
    path.parent.mkdir()
    path.write_text("\n".join(lines) + "\n")
    return path
