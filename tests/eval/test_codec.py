"""The codec report used to show that VAE training improves reconstructions."""

from __future__ import annotations

import json

import torch

from pockettts.eval.codec import codec_report, si_sdr
from pockettts.tools.__main__ import main


def test_si_sdr_orders_distortions():
    torch.manual_seed(0)
    clean = torch.randn(8000)
    assert si_sdr(2.0 * clean, clean) > 60  # scale-invariant
    assert si_sdr(clean + 0.1 * torch.randn(8000), clean) > si_sdr(clean + torch.randn(8000), clean)


def test_report_over_a_manifest_and_cli(tiny_vae, tiny_corpus, tmp_path):
    report = codec_report(tiny_vae, tiny_corpus / "valid.jsonl", limit=2)
    assert (
        report["items"] == 2
        and report["mel_distance"] > 0
        and torch.isfinite(torch.tensor(report["si_sdr_db"]))
    )
    path = tiny_vae.save(tmp_path / "vae.safetensors")
    out = tmp_path / "report.json"
    manifest = str(tiny_corpus / "valid.jsonl")
    assert main(["codec", "--vae", str(path), "--manifest", manifest, "--limit", "1", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["items"] == 1


def test_whisper_scores_originals_above_a_random_codec(tiny_vae, tiny_corpus, tiny_en):
    from pockettts.whisper import WhisperASR

    report = codec_report(tiny_vae, tiny_corpus / "valid.jsonl", limit=2, asr=WhisperASR(tiny_en[0]))
    rows = report["transcripts"]
    assert len(rows) == 2 and all(row["text"] for row in rows)
    # espeak/flite originals are readable; an untrained codec's noise is not
    assert report["original_wer"] < 0.5 < report["reconstruction_wer"]
    assert report["whisper"]["checkpoint"] == str(tiny_en[0])
