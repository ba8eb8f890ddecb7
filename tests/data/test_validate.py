"""Validation of a deliberately broken corpus: every problem reported by id, good items kept."""

import json
import subprocess
import sys

import numpy as np
import soundfile as sf

from pockettts.data.manifest import read_manifest
from pockettts.data.validate import ValidationConfig, validate_manifest
from tests.support import write_tone


def _broken_corpus(root):
    audio = root / "audio"
    write_tone(audio / "good1.wav", seconds=1.5, sample_rate=24000)
    write_tone(audio / "good2.flac", seconds=2.0, sample_rate=16000, freq=220)
    write_tone(audio / "stereo.wav", seconds=1.2, sample_rate=44100, channels=2)
    write_tone(audio / "short.wav", seconds=0.2)
    write_tone(audio / "long.wav", seconds=4.0)
    sf.write(audio / "silent.wav", np.zeros(24000, dtype=np.float32), 24000)
    (audio / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
    rows = [
        {"id": "good1", "audio": "audio/good1.wav", "text": "  A  good\u2019 item. ", "speaker": "s1"},
        {
            "id": "good2",
            "audio": "audio/good2.flac",
            "text": "Another one.",
            "speaker": "s2",
            "segments": [{"text": "Another one.", "start": 0.0, "end": 1.9}],
        },
        {"id": "stereo", "audio": "audio/stereo.wav", "text": "Stereo at 44.1 kHz.", "speaker": "s1"},
        {"id": "corrupt", "audio": "audio/corrupt.wav", "text": "Broken file."},
        {"id": "missing", "audio": "audio/nowhere.wav", "text": "No file."},
        {"id": "empty", "audio": "audio/good1.wav", "text": " ... !! "},
        {"id": "silent", "audio": "audio/silent.wav", "text": "Nothing audible."},
        {"id": "short", "audio": "audio/short.wav", "text": "Too short."},
        {"id": "long", "audio": "audio/long.wav", "text": "Too long."},
        {"id": "good1", "audio": "audio/good2.flac", "text": "Duplicate id."},
        {"id": "window", "audio": "audio/long.wav", "text": "Window.", "offset": 3.5, "duration": 2.0},
        {
            "id": "align",
            "audio": "audio/good1.wav",
            "text": "Bad words.",
            "words": [{"word": "Bad", "start": 0.2, "end": 9.0}],
        },
    ]
    lines = [json.dumps(r) for r in rows]
    lines.insert(3, '{"id": "torn", "audio": ')
    (root / "raw.jsonl").write_text("\n".join(lines) + "\n")
    return root / "raw.jsonl"


CONFIG = ValidationConfig(min_duration=0.5, max_duration=3.0)


def test_broken_corpus_report_and_clean_manifest(tmp_path):
    raw = _broken_corpus(tmp_path / "corpus")
    out = tmp_path / "elsewhere" / "clean.jsonl"
    report = validate_manifest(raw, out, config=CONFIG, progress=False)

    errors = {(p.id, p.code) for p in report.problems if p.is_error}
    assert errors == {
        ("corrupt", "unreadable_audio"),
        ("missing", "missing_file"),
        ("empty", "empty_text"),
        ("silent", "silent_audio"),
        ("short", "too_short"),
        ("long", "too_long"),
        ("good1", "duplicate_id"),
        ("window", "window_out_of_range"),
        ("align", "bad_alignment"),
        (None, "malformed_line"),
    }
    warnings = {(p.id, p.code) for p in report.problems if not p.is_error}
    assert warnings == {("stereo", "resampled"), ("stereo", "downmixed"), ("good2", "resampled")}
    assert report.total == 13 and report.kept == 3

    clean = read_manifest(out)
    assert [i.id for i in clean] == ["good1", "good2", "stereo"]
    assert clean[0].text == "A good' item."  # normalised
    assert clean[1].duration == 2.0
    # Paths were rewritten so they resolve from the clean manifest's own directory.
    assert all(i.resolve_audio(out.parent).is_file() for i in clean)

    saved = json.loads(out.with_suffix(".report.json").read_text())
    assert saved["kept"] == 3 and saved["counts"]["missing_file"] == 1
    assert any("nowhere.wav" in p["message"] for p in saved["problems"])


def test_validate_command_prints_report_and_exit_codes(tmp_path):
    raw = _broken_corpus(tmp_path / "corpus")
    cmd = [
        sys.executable,
        "-m",
        "pockettts.data",
        "validate",
        str(raw),
        "--out",
        str(tmp_path / "c.jsonl"),
        "--max-duration",
        "3",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "3/13 items kept" in result.stdout
    assert "[missing_file] missing: audio file not found" in result.stdout

    (tmp_path / "all_bad.jsonl").write_text('{"id": "x", "audio": "nope.wav", "text": "t"}\n')
    cmd[4] = str(tmp_path / "all_bad.jsonl")
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 1 and "no usable items" in result.stderr
