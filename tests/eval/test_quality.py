"""Quality scorers: DNSMOS and DistillMOS (shipped weights) on demo-corpus speech, UTMOS loading."""

from __future__ import annotations

import pytest
import torch

from pockettts.audio import SAMPLE_RATE, load_audio
from pockettts.data.manifest import read_manifest
from pockettts.eval.quality import QualityModelUnavailable, build_quality_scorer
from pockettts.eval.runner import build_scorers
from pockettts.schema import EvalConfig

# DNSMOS tiles clips shorter than 9.01 s up to 9.01 s; 2.4 s tiles to 9.6 s: one window, fast.
CLIP_SECONDS = 2.4


@pytest.fixture(scope="module")
def speech(tiny_corpus) -> dict[str, torch.Tensor]:
    """One 2.4 s clip ``[T]`` (24 kHz) per demo speaker, from the test split."""
    clips = {}
    for item in read_manifest(tiny_corpus / "test.jsonl"):
        if item.speaker not in clips:
            wav = load_audio(item.resolve_audio(tiny_corpus))[0]
            clips[item.speaker] = wav[int(0.2 * SAMPLE_RATE) : int((0.2 + CLIP_SECONDS) * SAMPLE_RATE)]
    return clips


def noisy(wav: torch.Tensor, std: float = 0.1) -> torch.Tensor:
    """Heavy white noise (about 0 dB SNR at the corpus's -23 LUFS)."""
    return wav + std * torch.randn(wav.shape, generator=torch.Generator().manual_seed(0))


def test_dnsmos_scores_clean_speech_above_noisy_speech(speech):
    scorer = build_quality_scorer("dnsmos")
    assert scorer.name == "dnsmos" and scorer.primary == "dnsmos_ovrl"
    for speaker in ("flite_slt", "festival_ked_diphone"):
        clean, dirty = (
            scorer.score(speech[speaker], SAMPLE_RATE),
            scorer.score(noisy(speech[speaker]), SAMPLE_RATE),
        )
        assert set(clean) == {"dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak", "dnsmos_p808"}
        assert all(1.0 <= v <= 5.0 for v in clean.values()), clean
        assert clean["dnsmos_ovrl"] > dirty["dnsmos_ovrl"] + 0.5, (speaker, clean, dirty)
        assert clean["dnsmos_bak"] > dirty["dnsmos_bak"] + 1.0, (speaker, clean, dirty)
    # any rate, [1, T] input, and out-of-range samples (clipped) are accepted
    loud = 3.0 * speech["flite_slt"][None, ::3]
    assert 1.0 <= scorer.score(loud, SAMPLE_RATE // 3)["dnsmos_ovrl"] <= 5.0


def test_distillmos_scores_clean_speech_above_noisy_speech(speech):
    scorer = build_quality_scorer("distillmos")
    clean = scorer.score(speech["festival_ked_diphone"], SAMPLE_RATE)["distillmos"]
    dirty = scorer.score(noisy(speech["festival_ked_diphone"]), SAMPLE_RATE)["distillmos"]
    assert 1.0 <= dirty < clean - 0.5 and clean <= 5.0


def test_utmos_needs_a_local_checkpoint(tmp_path):
    with pytest.raises(QualityModelUnavailable, match="UTMOS weights are not available offline"):
        build_quality_scorer("utmos")
    with pytest.raises(QualityModelUnavailable, match="UTMOS checkpoint not found"):
        build_quality_scorer("utmos", checkpoint=str(tmp_path / "utmos_scripted.pt"))


class SecondsAt16k(torch.nn.Module):
    """A TorchScript stand-in with UTMOS-PyTorch's contract, ``[B, 1, T]`` at 16 kHz -> ``[B]``,
    that returns the input length in seconds at 16 kHz (so the test sees what the scorer fed it)."""

    def forward(self, wavs: torch.Tensor) -> torch.Tensor:
        return torch.full((wavs.shape[0],), wavs.shape[2] / 16000.0)


def test_utmos_loads_a_torchscript_checkpoint(tmp_path):
    path = tmp_path / "utmos_scripted.pt"
    torch.jit.save(torch.jit.script(SecondsAt16k()), str(path))
    scorer = build_quality_scorer("utmos", checkpoint=str(path))
    assert scorer.name == "utmos"
    assert scorer.score(torch.zeros(SAMPLE_RATE // 2), SAMPLE_RATE) == {"utmos": pytest.approx(0.5)}


def test_eval_builds_utmos_from_quality_checkpoint(tmp_path, tiny_en):
    """``quality_scorer=utmos quality_checkpoint=<file>`` on eval.py reaches the scorer."""
    path = tmp_path / "utmos_scripted.pt"
    torch.jit.save(torch.jit.script(SecondsAt16k()), str(path))
    cfg = EvalConfig(
        whisper=str(tiny_en[0]), speaker_embedder=None, quality_scorer="utmos", quality_checkpoint=str(path)
    )
    quality = build_scorers(cfg, torch.device("cpu")).quality
    assert quality.name == "utmos" and quality.score(torch.zeros(SAMPLE_RATE), SAMPLE_RATE) == {"utmos": 1.0}
    cfg.quality_checkpoint = str(tmp_path / "absent.pt")
    with pytest.raises(QualityModelUnavailable, match="UTMOS checkpoint not found: .*absent.pt"):
        build_scorers(cfg, torch.device("cpu"))


def test_bad_requests_are_clear():
    with pytest.raises(ValueError, match="unknown quality scorer 'pesq'"):
        build_quality_scorer("pesq")
    with pytest.raises(ValueError, match="uses the weights in its package"):
        build_quality_scorer("dnsmos", checkpoint="x.onnx")
    scorer = build_quality_scorer("dnsmos")
    with pytest.raises(ValueError, match="empty audio"):
        scorer.score(torch.zeros(0), SAMPLE_RATE)
    with pytest.raises(ValueError, match=r"expected audio \[T\] or \[C, T\]"):
        scorer.score(torch.zeros(1, 1, 100), SAMPLE_RATE)
