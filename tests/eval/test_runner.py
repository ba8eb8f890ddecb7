"""The evaluation runner: results-directory naming from every knob, a tiny end-to-end evaluation with
real Whisper tiny.en (transcripts, WER/CER under both normalisers, speaker similarity, quality,
failure counts, missing audio by id), resuming without redoing written items, refusing to mix
settings, and ``eval.py``'s exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
import torch

from pockettts.eval.runner import (
    EvalError,
    checkpoint_info,
    dirname_for_testset,
    eval_knobs,
    evaluate,
    open_checkpoint,
    results_name,
    spread,
)
from pockettts.eval.wer import character_error_rate, word_error_rate
from pockettts.models.bundle import write_export
from pockettts.models.flow_lm import FlowLM
from pockettts.models.sampling import SamplingOptions
from pockettts.schema import EvalConfig
from tests.support import ROOT, amplify_codec

SMALL = dict(head={"kind": "lsd", "dim": 8, "depth": 1}, d_model=16, num_heads=2, num_layers=1,
             dim_feedforward=32, vocab_size=16, latent_dim=4)  # fmt: skip


def _export(path: Path, step: int | None = None, ema: bool | None = None, **config) -> Path:
    torch.manual_seed(0)
    return write_export(FlowLM(**{**SMALL, **config}), path, step=step, ema=ema)


def _info(path: Path, **options) -> dict:
    return checkpoint_info(open_checkpoint(_export(path, **options)))


def test_checkpoint_info_reads_name_step_ema_and_noise_level(tmp_path):
    plain = _info(tmp_path / "student.safetensors")
    assert (plain["name"], plain["step"], plain["ema"], plain["context_noise"]) == (
        "student",
        None,
        None,
        0.0,
    )
    noisy = _info(
        tmp_path / "noise_max_0.5" / "export" / "teacher.safetensors", step=1200, ema=True,
        context_noise={"max_level": 0.5},
    )  # fmt: skip
    assert noisy["name"] == "noise_max_0.5-teacher-step1200-ema"
    assert noisy["context_noise"] == 0.5 and noisy["num_layers"] == 1 and len(noisy["sha256"]) == 64
    with pytest.raises(EvalError, match="does not exist"):
        open_checkpoint(tmp_path / "absent.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a model")
    with pytest.raises(EvalError, match="junk.safetensors"):
        open_checkpoint(tmp_path / "junk.safetensors")


def test_results_name_encodes_every_knob(tmp_path):
    checkpoint = _info(tmp_path / "run" / "export" / "student.safetensors")
    sha = checkpoint["sha256"][:8]
    sampling = SamplingOptions(cfg_scale=1.5, temperature=0.3, eos_threshold=-4.0)
    cfg = EvalConfig(checkpoint="unused", sampling=sampling)
    name = results_name(eval_knobs(cfg, checkpoint, "demo"))
    tail = "seed0-asr_tiny.en-norm_whisper+plain-sim_resemblyzer-q_dnsmos"
    assert name == f"run-student-{sha}-cfg1.5-t0.3-eos-4-{tail}"
    changed = EvalConfig(
        checkpoint="unused", max_items=8, whisper="/w/large-v3.pt", beam_size=5,
        loop_guard=True, normalizers=["plain"], speaker_embedder=None, quality_scorer=None, precision="int8",
        sampling=SamplingOptions(cfg_scale=2.0, temperature=0.7, eos_threshold=-1.0, noise_clamp=3.0,
                                 frames_after_eos=2, max_tokens=30, max_frames=40, head_steps=2, seed=2),
    )  # fmt: skip
    assert results_name(eval_knobs(changed, checkpoint, "demo")) == (
        f"run-student-{sha}-cfg2-t0.7-eos-1-clamp3-after2-tok30-frames40-steps2-n8-int8-seed2-"
        "asr_large-v3_beam5_guard-norm_plain"
    )
    assert spread(84, 4) == [0, 21, 42, 63] and spread(3, None) == spread(3, 5) == [0, 1, 2]
    assert dirname_for_testset("demo", {"data_dir": "/x", "prompt_seconds": 3.0}) == "demo-prompt3s"
    assert dirname_for_testset("seed_tts", {"meta_path": "/m/meta.lst"}) == "seed_tts"
    # other prompt recordings are another test: their folder is named
    enhanced = dirname_for_testset("librispeech_pc", {"prompt_dir": "/p/enhanced/"})
    assert enhanced == "librispeech_pc-prompts_enhanced"


def _config(tmp_path: Path, whisper: Path, meta: Path, **overrides) -> EvalConfig:
    return EvalConfig(**{
        "checkpoint": str(tmp_path / "export" / "flow_lm.safetensors"), "testset": "seed_tts",
        "testset_options": {"meta_path": str(meta), "audio_root": None}, "whisper": str(whisper),
        "results_root": str(tmp_path / "results"), "asr_batch_size": 1, **overrides,
    })  # fmt: skip


def test_tiny_end_to_end_eval_resumes_and_counts_missing(tts, tiny_en, meta, tmp_path):
    amplify_codec(tmp_path / "export" / "vae.safetensors")
    cfg = _config(tmp_path, tiny_en[0], meta)
    results = evaluate(cfg)
    out = Path(results["results_dir"])
    assert out.parent == tmp_path / "results" / "seed_tts" and out.name.startswith(
        f"{tmp_path.name}-flow_lm-"
    )
    rows = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["a1", "b2"] and [r["seed"] for r in rows] == [0, 1]
    for row in rows:
        data, rate = sf.read(out / row["wav"])
        assert rate == tts.vae.sample_rate and len(data) / rate == pytest.approx(row["audio_seconds"])
        assert isinstance(row["transcript"], str) and set(row["wer"]) == set(row["cer"]) == {
            "whisper",
            "plain",
        }
        assert row["wer"]["plain"] == word_error_rate([row["text"]], [row["transcript"]], "plain")["wer"]
        assert row["wer"]["plain"] == row["word_errors"]["plain"] / row["reference_words"]["plain"]
        assert not row["silent"] and -1 <= row["sim_prompt"] <= 1 and row["ttfa_seconds"] > 0
        assert set(row["quality"]) == {"dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak", "dnsmos_p808"}
        assert row["eos_reached"] is False  # the fixture's EOS bias is -100: it never stops
    assert rows[0]["sim_reference"] is not None and rows[1]["sim_reference"] is None
    # the listening page's audio: the prompt as the voice was made from it, the reference where there is one
    assert [(r["kept_prompt"], r["kept_reference"]) for r in rows] == [
        ("prompts/a1.flac", "references/a1.flac"), ("prompts/b2.flac", None),
    ]  # fmt: skip
    assert sf.info(out / rows[0]["kept_reference"]).samplerate == tts.vae.sample_rate
    assert 'src="prompts/b2.flac"' in (out / "report.html").read_text()
    summary = results["summary"]
    texts, hyps = [r["text"] for r in rows], [r["transcript"] for r in rows]
    assert summary["wer_whisper"] == word_error_rate(texts, hyps, "whisper")["wer"]
    assert summary["cer_plain"] == character_error_rate(texts, hyps, "plain")["cer"]
    for metric in ("wer_whisper", "mean_wer_plain", "cer_whisper", "sim_prompt", "quality_dnsmos_ovrl"):
        low, high = summary[f"{metric}_ci"]  # 95% bootstrap over the two items
        assert low - 1e-12 <= summary[metric] <= high + 1e-12
    assert results["intervals"]["resamples"] == 2000
    assert summary["no_eos"] == 2 and summary["missing"] == 1 and summary["items"] == 2
    assert results["missing"] == [{"id": "gone", "path": str(tmp_path / "absent.wav")}]
    assert summary["rtf"] == pytest.approx(
        sum(r["generation_seconds"] for r in rows) / sum(r["audio_seconds"] for r in rows)
    )
    assert results["asr"]["dims"]["n_text_layer"] == 4 and results["knobs"]["asr"] == "tiny.en"
    assert json.loads((out / "results.json").read_text()) == results
    table = (out / "results.md").read_text()
    assert (
        "| items | WER-P % | WER-W % | CER-W % | SIM-o | SIM-r |" in table
        and "Missing audio (1): gone" in table
    )
    low, high = summary["wer_whisper_ci"]
    assert f"{summary['wer_whisper'] * 100:.2f} [{low * 100:.2f}, {high * 100:.2f}]" in table

    # a crash after the first item: its row is written, the second row only half
    lines = (out / "items.jsonl").read_text().splitlines()
    (out / "items.jsonl").write_text(lines[0] + "\n" + lines[1][:40])
    kept = (out / rows[0]["wav"]).stat().st_mtime_ns
    again = evaluate(cfg)
    redone = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()[1:]]
    assert [r["id"] for r in redone] == ["b2"] and redone[0]["transcript"] == rows[1]["transcript"]
    assert (out / rows[0]["wav"]).stat().st_mtime_ns == kept  # the finished item was not regenerated
    assert again["summary"]["wer_whisper"] == summary["wer_whisper"]

    # batched generation (generate_batch) speaks what one-at-a-time generation does
    batched = evaluate(_config(tmp_path, tiny_en[0], meta, generation_batch_size=2, asr_batch_size=2,
                               quality_scorer=None, speaker_embedder=None))  # fmt: skip
    assert "-bs2-" in batched["results_dir"] and batched["summary"]["items"] == 2
    for row in rows:
        one, _ = sf.read(out / row["wav"])
        two, _ = sf.read(Path(batched["results_dir"]) / row["wav"])
        assert one.shape == two.shape and abs(one - two).max() < 1e-3

    # same directory, other settings (the audio root of the meta file is not in the name): refused
    with pytest.raises(EvalError, match="testset_options differ"):
        options = {"meta_path": str(meta), "audio_root": str(meta.parent)}
        evaluate(_config(tmp_path, tiny_en[0], meta, testset_options=options))


def _eval_py(*overrides: str, cwd: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, str(ROOT / "eval.py"), *overrides, f"hydra.run.dir={cwd / 'hydra'}"]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd)


def test_eval_py_bad_input_exits_non_zero_with_the_reason(tmp_path):
    result = _eval_py(f"checkpoint={tmp_path / 'absent.safetensors'}", cwd=tmp_path)
    assert result.returncode == 1 and "absent.safetensors does not exist" in result.stderr + result.stdout
    checkpoint = _export(tmp_path / "m.safetensors")
    result = _eval_py(f"checkpoint={checkpoint}", "testset=librispeech_pc", cwd=tmp_path)
    assert result.returncode == 1 and "needs librispeech_root" in result.stderr + result.stdout
    result = _eval_py(f"checkpoint={checkpoint}", "sampling.temprature=0.5", cwd=tmp_path)
    assert result.returncode != 0 and "sampling.temprature" in result.stderr + result.stdout
