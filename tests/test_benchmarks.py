"""The text-to-speech speed benchmark runs end to end in its smallest setting (no time is asserted)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from tests.support import ROOT

SHIPPED = ROOT / "recipes" / "tiny" / "checkpoints"


@pytest.mark.slow
def test_tts_speed_measures_a_small_config_next_to_pocket_tts(tmp_path):
    pytest.importorskip("pocket_tts", reason="the benchmark builds its models with pocket-tts")
    out = tmp_path / "speed.json"
    command = [sys.executable, str(ROOT / "benchmarks" / "tts_speed.py"), "--configs", "english_2m_2026-10",
               "--frames", "3", "--runs", "1", "--threads", "1", "--precisions", "int8",
               "--prompt-seconds", "2", "--json", str(out)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ours / reference" in done.stdout and "ours int8 / its default" not in done.stdout
    results = json.loads(out.read_text())
    assert set(results) == {"english_2m_2026-10/reference/int8/1", "english_2m_2026-10/ours/int8/1"}
    measured = ("rtf", "ttfa_ms", "backbone_ms", "head_ms", "decoder_ms", "peak_rss_mb")
    for result in results.values():
        assert all(math.isfinite(result[key]) and result[key] > 0 for key in measured), result


@pytest.mark.slow
def test_tts_speed_measures_an_exported_model_alone(tmp_path):
    """--checkpoints: a trained export (the shipped small student, with the light codec) by the same
    protocol, with no reference side; a missing file is named before anything runs."""
    out = tmp_path / "speed.json"
    student = SHIPPED / "small_student.safetensors"
    command = [sys.executable, str(ROOT / "benchmarks" / "tts_speed.py"), "--checkpoints", str(student),
               "--vae", str(SHIPPED / "vae_light.safetensors"), "--frames", "3", "--runs", "1",
               "--threads", "1", "--precisions", "float32", "--prompt-seconds", "2",
               "--json", str(out)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ours / reference" not in done.stdout
    results = json.loads(out.read_text())
    assert list(results) == [f"{student}/ours/float32/1"]
    assert math.isfinite(results[f"{student}/ours/float32/1"]["rtf"])
    missing = [*command[:3], str(tmp_path / "none.safetensors")]
    missing = subprocess.run(missing, capture_output=True, text=True)
    assert missing.returncode != 0 and "none.safetensors" in missing.stderr
