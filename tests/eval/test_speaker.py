"""Speaker embedders: resemblyzer separates the demo corpus's speakers; WavLM x-vectors load from a
local directory (a randomly initialised tiny model here, through the same code path)."""

from __future__ import annotations

import pytest
import torch

from pockettts.audio import SAMPLE_RATE, load_audio
from pockettts.data.manifest import read_manifest
from pockettts.eval.speaker import SpeakerModelUnavailable, build_speaker_embedder, cosine_similarity


def test_cosine_similarity():
    a, b = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 2.0, 0.0])
    assert cosine_similarity(a, 3 * a) == pytest.approx(1.0)
    assert cosine_similarity(a, b) == pytest.approx(0.0)
    assert cosine_similarity(a, -a) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="expected two embeddings"):
        cosine_similarity(a, torch.ones(4))


def test_resemblyzer_ranks_same_speaker_above_other_speakers(tiny_corpus):
    """Two held-out utterances (different sentences) per speaker: every clip is closer to the other
    clip of its speaker than to any clip of another speaker."""
    items = read_manifest(tiny_corpus / "test.jsonl") + read_manifest(tiny_corpus / "valid.jsonl")
    embedder = build_speaker_embedder()
    assert embedder.name == "resemblyzer" and build_speaker_embedder() is embedder  # loaded once
    clips = [load_audio(item.resolve_audio(tiny_corpus))[0] for item in items]
    embeddings = [embedder.embed(clip, SAMPLE_RATE) for clip in clips]
    assert all(e.shape == (256,) and torch.linalg.norm(e) == pytest.approx(1.0, abs=1e-5) for e in embeddings)
    speakers = [item.speaker for item in items]
    assert len(set(speakers)) == 3 and all(speakers.count(s) >= 2 for s in speakers)
    for i, speaker in enumerate(speakers):
        same = [
            cosine_similarity(embeddings[i], embeddings[j])
            for j in range(len(items))
            if j != i and speakers[j] == speaker
        ]
        other = [
            cosine_similarity(embeddings[i], embeddings[j])
            for j in range(len(items))
            if speakers[j] != speaker
        ]
        assert min(same) > max(other) + 0.1, (items[i].id, same, other)
    # the sample rate is honoured: the same clip at 16 kHz embeds like the 24 kHz original
    resampled = load_audio(items[0].resolve_audio(tiny_corpus), sample_rate=16000)[0]
    assert cosine_similarity(embedder.embed(resampled, 16000), embeddings[0]) > 0.99


def test_resemblyzer_embeds_quiet_speech_and_rejects_silence(tiny_corpus):
    item = read_manifest(tiny_corpus / "test.jsonl")[0]
    clip = load_audio(item.resolve_audio(tiny_corpus))[0]
    embedder = build_speaker_embedder()
    quiet = embedder.embed(0.05 * clip, SAMPLE_RATE)  # about -49 LUFS
    assert cosine_similarity(quiet, embedder.embed(clip, SAMPLE_RATE)) > 0.99
    with pytest.raises(ValueError, match="cannot embed silent audio"):
        embedder.embed(torch.zeros(SAMPLE_RATE), SAMPLE_RATE)


@pytest.fixture(scope="module")
def tiny_wavlm_sv(tmp_path_factory):
    """A randomly initialised, tiny ``WavLMForXVector`` saved like microsoft/wavlm-base-plus-sv."""
    transformers = pytest.importorskip("transformers")
    config = transformers.WavLMConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16, 16),
        conv_stride=(5, 4),
        conv_kernel=(10, 8),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        num_buckets=32,
        max_bucket_distance=100,
        tdnn_dim=(16, 16, 32),
        tdnn_kernel=(5, 3, 1),
        tdnn_dilation=(1, 2, 1),
        xvector_output_dim=24,
    )
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("wavlm-sv")
    transformers.WavLMForXVector(config).save_pretrained(folder)
    transformers.Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True, return_attention_mask=True
    ).save_pretrained(folder)
    return folder


def test_wavlm_xvector_loads_from_a_local_directory(tiny_wavlm_sv):
    embedder = build_speaker_embedder("wavlm_sv", checkpoint=str(tiny_wavlm_sv))
    assert embedder.name == "wavlm_sv"
    voice = torch.randn(SAMPLE_RATE, generator=torch.Generator().manual_seed(1))
    first = embedder.embed(voice, SAMPLE_RATE)
    assert first.shape == (24,) and torch.linalg.norm(first) == pytest.approx(1.0, abs=1e-5)
    assert torch.equal(embedder.embed(voice, SAMPLE_RATE), first)  # eval mode: deterministic
    # the model really sees the audio: a different signal moves the embedding
    assert (
        cosine_similarity(embedder.embed(torch.sin(torch.arange(SAMPLE_RATE) * 0.05), SAMPLE_RATE), first)
        < 0.999
    )


def test_missing_checkpoints_and_names_are_clear_errors(tmp_path):
    with pytest.raises(SpeakerModelUnavailable, match="needs checkpoint=<local directory"):
        build_speaker_embedder("wavlm_sv")
    with pytest.raises(SpeakerModelUnavailable, match="has no config.json"):
        build_speaker_embedder("wavlm_sv", checkpoint=str(tmp_path))
    with pytest.raises(SpeakerModelUnavailable, match="needs speaker_checkpoint=<local wavlm_large_finetune"):
        build_speaker_embedder("wavlm_ecapa")
    with pytest.raises(SpeakerModelUnavailable, match="does not exist: .*seed-tts-eval README"):
        build_speaker_embedder("wavlm_ecapa", checkpoint=str(tmp_path / "wavlm_large_finetune.pth"))
    with pytest.raises(ValueError, match="unknown speaker embedder 'ecapa'"):
        build_speaker_embedder("ecapa")
    with pytest.raises(ValueError, match="do not pass a checkpoint"):
        build_speaker_embedder("resemblyzer", checkpoint="x.pt")
    with pytest.raises(ValueError, match="cannot embed empty audio"):
        build_speaker_embedder().embed(torch.zeros(0), SAMPLE_RATE)
