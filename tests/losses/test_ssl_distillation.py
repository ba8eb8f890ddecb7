"""SSL teacher loading (a tiny local WavLM) and the latent-to-feature distillation loss."""

from __future__ import annotations

import pytest
import torch
import torchaudio

from pockettts.losses.ssl_distillation import (
    LatentFeatureDistillation,
    SSLFeatureTeacher,
    load_ssl_teacher,
)
from tests.support import TINY_WAVLM, speechlike


@pytest.fixture(scope="module")
def tiny_wavlm_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ssl") / "tiny_wavlm.pt"
    torch.save(torchaudio.models.wavlm_model(**TINY_WAVLM).state_dict(), path)
    return path


def test_ssl_teacher_features_at_50hz_and_frozen(tiny_wavlm_checkpoint):
    teacher = load_ssl_teacher(tiny_wavlm_checkpoint, architecture="custom", **TINY_WAVLM)
    assert isinstance(teacher, SSLFeatureTeacher)
    audio = speechlike(seconds=1.0)
    features = teacher(audio)
    assert features.shape[0] == 1 and features.shape[2] == 64
    assert abs(features.shape[1] - 50) <= 1  # 1 s of audio at ~50 frames per second
    assert not features.requires_grad
    assert all(not p.requires_grad for p in teacher.parameters())
    teacher.train()  # a parent module switching to training must not enable dropout in the teacher
    assert not teacher.training and not teacher.model.training
    torch.testing.assert_close(teacher(audio), features)


def test_ssl_teacher_layer_choice_and_wrapped_state_dict(tiny_wavlm_checkpoint, tmp_path):
    first = load_ssl_teacher(tiny_wavlm_checkpoint, architecture="custom", layer=1, **TINY_WAVLM)
    last = load_ssl_teacher(tiny_wavlm_checkpoint, architecture="custom", **TINY_WAVLM)
    audio = speechlike(seconds=0.5)
    assert not torch.allclose(first(audio), last(audio))
    # {"state_dict": ...} checkpoints load too and give the same model
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"state_dict": torch.load(tiny_wavlm_checkpoint, weights_only=True)}, wrapped)
    torch.testing.assert_close(
        load_ssl_teacher(wrapped, architecture="custom", **TINY_WAVLM)(audio), last(audio)
    )
    with pytest.raises(ValueError, match="layer 3"):
        load_ssl_teacher(tiny_wavlm_checkpoint, architecture="custom", layer=3, **TINY_WAVLM)


def test_ssl_teacher_missing_file_names_the_path(tmp_path):
    missing = tmp_path / "nowhere" / "wavlm.pt"
    with pytest.raises(FileNotFoundError) as error:
        load_ssl_teacher(missing)
    assert str(missing) in str(error.value) and "WAVLM_BASE_PLUS" in str(error.value)


def test_ssl_teacher_wrong_checkpoint_is_a_clear_error(tiny_wavlm_checkpoint, tmp_path):
    three_layers = dict(TINY_WAVLM, encoder_num_layers=3)
    with pytest.raises(ValueError, match=r"missing keys: encoder\.transformer\.layers\.2"):
        load_ssl_teacher(tiny_wavlm_checkpoint, architecture="custom", **three_layers)
    wider = dict(TINY_WAVLM, encoder_embed_dim=32)
    with pytest.raises(ValueError, match="shape mismatches"):
        load_ssl_teacher(tiny_wavlm_checkpoint, architecture="custom", **wider)
    not_a_state_dict = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), not_a_state_dict)
    with pytest.raises(ValueError, match="not a state dict"):
        load_ssl_teacher(not_a_state_dict, architecture="custom", **TINY_WAVLM)
    with pytest.raises(ValueError, match="hubert"):
        load_ssl_teacher(tiny_wavlm_checkpoint, architecture="hubert")


def test_distillation_is_zero_when_projection_matches():
    torch.manual_seed(0)
    distill = LatentFeatureDistillation(latent_dim=8, feature_dim=16)
    latent = torch.randn(2, 8, 10)
    with torch.no_grad():
        per_latent_frame = distill.proj(latent)  # [B, C, T]
    # features at 4x the latent rate, each latent frame repeated 4 times, plus 3 extra frames to crop
    features = per_latent_frame.repeat_interleave(4, dim=-1).transpose(1, 2)
    features = torch.cat([features, torch.randn(2, 3, 16)], dim=1)
    assert distill(latent, features).item() == pytest.approx(0.0, abs=1e-5)
    assert distill(latent, torch.randn_like(features)).item() > 0.5


def test_distillation_loss_decreases_when_optimising():
    torch.manual_seed(0)
    distill = LatentFeatureDistillation(latent_dim=8, feature_dim=16)
    features = torch.randn(2, 41, 16)
    latent = torch.randn(2, 8, 10, requires_grad=True)
    optimiser = torch.optim.Adam([latent, *distill.parameters()], lr=0.05)
    losses = []
    for _ in range(40):
        loss = distill(latent, features)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
    assert all(p.requires_grad for p in distill.parameters())
    assert distill.proj.bias is None


def test_distillation_mask_and_rate_validation():
    distill = LatentFeatureDistillation(latent_dim=4, feature_dim=8)
    latent, features = torch.randn(1, 4, 6), torch.randn(1, 24, 8)
    per_frame = torch.stack(
        [distill(latent[..., t : t + 1], features[:, 4 * t : 4 * t + 4]) for t in range(6)]
    )
    mask = torch.tensor([[1, 1, 1, 0, 0, 0]])
    torch.testing.assert_close(distill(latent, features, mask), per_frame[:3].mean())
    with pytest.raises(ValueError, match="whole number"):
        LatentFeatureDistillation(latent_frame_rate=12.5, feature_frame_rate=30.0)
