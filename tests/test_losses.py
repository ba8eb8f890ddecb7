"""Losses: adversarial + feature matching, spectral, KL, SSL teacher loading and latent distillation."""

from __future__ import annotations

import math

import pytest
import torch
import torchaudio

from pockettts.losses.adversarial import (
    discriminator_loss,
    feature_matching_loss,
    generator_adversarial_loss,
)
from pockettts.losses.kl import gaussian_kl
from pockettts.losses.spectral import MultiResolutionSTFTLoss, MultiScaleMelLoss, mel_distance
from pockettts.losses.ssl_distillation import (
    LatentFeatureDistillation,
    SSLFeatureTeacher,
    load_ssl_teacher,
)

SR = 24_000


def speechlike(seconds: float = 0.5, seed: int = 0) -> torch.Tensor:
    """A harmonic tone with a slow envelope, ``[1, 1, T]``."""
    generator = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * SR)) / SR
    f0 = 140.0
    wave = sum(
        torch.sin(2 * math.pi * f0 * k * t + torch.rand(1, generator=generator)) / k for k in range(1, 8)
    )
    envelope = 0.5 + 0.5 * torch.sin(2 * math.pi * 3.0 * t)
    return (0.1 * wave * envelope).view(1, 1, -1)


def outputs(*logits, features=None):
    """Discriminator-style output list from logit tensors (features default to the logits)."""
    return [(lg, features if features is not None else [lg]) for lg in logits]


# --- adversarial -------------------------------------------------------------------------------


def test_hinge_discriminator_loss_matches_hand_computation():
    real = outputs(torch.tensor([2.0, 0.5]), torch.tensor([0.0, 3.0]))
    fake = outputs(torch.tensor([-0.5, 1.0]), torch.tensor([-2.0, -1.0]))
    # sub-disc 1: real mean(relu(1-[2, .5])) = .25, fake mean(relu(1+[-.5, 1])) = 1.25 -> 1.5
    # sub-disc 2: real mean(relu(1-[0, 3])) = .5,   fake mean(relu(1+[-2, -1])) = 0   -> .5
    assert discriminator_loss(real, fake, "hinge").item() == pytest.approx(1.0)
    # generator: mean(relu(1 - fake)): sub 1 -> mean(1.5, 0) = .75; sub 2 -> mean(3, 2) = 2.5
    assert generator_adversarial_loss(fake, "hinge").item() == pytest.approx(1.625)


def test_lsgan_losses_match_hand_computation():
    real = outputs(torch.tensor([1.0, 0.0]))
    fake = outputs(torch.tensor([0.5, -1.0]))
    # D: mean((1-[1, 0])^2) = .5 ; mean([.5, -1]^2) = .625
    assert discriminator_loss(real, fake, "lsgan").item() == pytest.approx(1.125)
    # G: mean((1-[.5, -1])^2) = mean(.25, 4) = 2.125
    assert generator_adversarial_loss(fake, "lsgan").item() == pytest.approx(2.125)


@pytest.mark.parametrize("kind", ["hinge", "lsgan"])
def test_discriminator_loss_prefers_correct_verdicts(kind):
    confident = discriminator_loss(outputs(torch.full((4,), 1.0)), outputs(torch.full((4,), -1.0)), kind)
    swapped = discriminator_loss(outputs(torch.full((4,), -1.0)), outputs(torch.full((4,), 1.0)), kind)
    assert confident.item() < swapped.item()
    fooled = generator_adversarial_loss(outputs(torch.full((4,), 1.0)), kind)
    caught = generator_adversarial_loss(outputs(torch.full((4,), -1.0)), kind)
    assert fooled.item() < caught.item()


def test_unknown_kind_is_named_in_the_error():
    real = outputs(torch.zeros(2))
    with pytest.raises(ValueError, match="wgan"):
        discriminator_loss(real, real, kind="wgan")
    with pytest.raises(ValueError, match="wgan"):
        generator_adversarial_loss(real, kind="wgan")


def test_feature_matching_zero_for_identical_and_normalised_per_layer():
    feats = [torch.randn(2, 3, 5), 100.0 * torch.randn(2, 4)]
    same = feature_matching_loss(
        outputs(torch.zeros(1), features=feats), outputs(torch.zeros(1), features=feats)
    )
    assert same.item() == 0.0
    # Off by 10% of each layer's scale: every layer contributes the same despite the 100x scale gap.
    fake_feats = [1.1 * f for f in feats]
    loss = feature_matching_loss(
        outputs(torch.zeros(1), features=feats), outputs(torch.zeros(1), features=fake_feats)
    )
    assert loss.item() == pytest.approx(0.1, rel=1e-4)


def test_feature_matching_gradient_only_reaches_fake():
    real = torch.randn(3, 4, requires_grad=True)
    fake = torch.randn(3, 4, requires_grad=True)
    loss = feature_matching_loss(
        outputs(torch.zeros(1), features=[real]), outputs(torch.zeros(1), features=[fake])
    )
    assert loss.item() > 0
    loss.backward()
    assert real.grad is None and fake.grad is not None


# --- spectral ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mel_loss() -> MultiScaleMelLoss:
    return MultiScaleMelLoss(sample_rate=SR)


def noisy_versions(target: torch.Tensor, levels=(0.001, 0.01, 0.05, 0.2)) -> list[torch.Tensor]:
    noise = torch.randn(target.shape, generator=torch.Generator().manual_seed(1))
    return [target + level * noise for level in levels]


def test_mel_loss_zero_for_identical_and_monotone_in_noise(mel_loss):
    target = speechlike()
    assert mel_loss(target, target).item() == 0.0
    losses = [mel_loss(pred, target).item() for pred in noisy_versions(target)]
    assert all(a < b for a, b in zip(losses, losses[1:])), losses


def test_mel_loss_has_no_parameters_or_state_and_follows_the_module(mel_loss):
    assert list(mel_loss.parameters()) == []
    assert mel_loss.state_dict() == {}
    buffers = dict(mel_loss.named_buffers())
    assert any("fb" in name for name in buffers)  # filterbanks are buffers, so .to(device) moves them
    assert not any(b.requires_grad for b in buffers.values())


def test_mel_loss_finite_on_silence_and_differentiable(mel_loss):
    silence = torch.zeros(1, 1, 12000)
    assert mel_loss(silence, silence).item() == 0.0
    pred = (0.01 * torch.randn(1, 1, 12000)).requires_grad_(True)
    loss = mel_loss(pred, silence)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 0
    assert torch.isfinite(pred.grad).all()


@pytest.mark.parametrize(
    "loss_fn",
    [
        MultiScaleMelLoss(SR, linear_weight=1.0),
        MultiResolutionSTFTLoss(),
        lambda p, t: mel_distance(p, t, SR),
    ],
    ids=["mel", "mrstft", "mel_distance"],
)
def test_spectral_losses_stay_float32_under_bf16_autocast(loss_fn):
    target = speechlike().to(torch.bfloat16)
    pred = noisy_versions(target.float(), levels=(0.02,))[0].to(torch.bfloat16)
    reference = loss_fn(pred.float(), target.float())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = loss_fn(pred, target)
    assert mixed.dtype == torch.float32
    # Identical to the float32 computation on the same (bf16-rounded) inputs: nothing ran in bf16.
    torch.testing.assert_close(mixed, reference, rtol=1e-5, atol=1e-6)


def test_mrstft_zero_identical_monotone_and_finite_on_silence():
    loss_fn = MultiResolutionSTFTLoss(fft_sizes=(256, 512, 1024))
    target = speechlike()
    assert loss_fn(target, target).item() == pytest.approx(0.0, abs=1e-6)
    losses = [loss_fn(pred, target).item() for pred in noisy_versions(target)]
    assert all(a < b for a, b in zip(losses, losses[1:])), losses
    silence = torch.zeros_like(target)
    assert loss_fn(silence, silence).item() == 0.0
    assert torch.isfinite(loss_fn(target, silence))
    assert list(loss_fn.parameters()) == [] and loss_fn.state_dict() == {}


def test_mrstft_hand_computed_for_a_scaled_signal():
    # pred = 2 * target: SC = ||S - 2S|| / ||S|| = 1 and |log S - log 2S| = ln 2 at every bin.
    target = 0.1 * torch.randn(
        1, 1, 12000, generator=torch.Generator().manual_seed(2)
    )  # broadband: no clamped bins
    loss = MultiResolutionSTFTLoss(fft_sizes=(256,))(2 * target, target)
    assert loss.item() == pytest.approx(1.0 + math.log(2.0), rel=1e-3)


def test_mel_distance_metric():
    target = speechlike()
    assert mel_distance(target, target, SR).item() == 0.0
    # Halving the amplitude of broadband noise shifts every (unclamped) log-mel bin by ln 2.
    noise = 0.1 * torch.randn(1, 1, 12000, generator=torch.Generator().manual_seed(2))
    assert mel_distance(0.5 * noise, noise, SR).item() == pytest.approx(math.log(2), rel=1e-2)
    with pytest.raises(ValueError, match="differ"):
        mel_distance(target, target[..., :-10], SR)


# --- KL ----------------------------------------------------------------------------------------


def test_gaussian_kl_closed_form_and_zero_at_prior():
    torch.manual_seed(0)
    mean, logvar = torch.randn(2, 4, 6), torch.randn(2, 4, 6)
    prior = torch.distributions.Normal(0.0, 1.0)
    posterior = torch.distributions.Normal(mean, (0.5 * logvar).exp())
    expected = torch.distributions.kl_divergence(posterior, prior).sum(dim=1).mean()
    torch.testing.assert_close(gaussian_kl(mean, logvar), expected)
    assert gaussian_kl(torch.zeros(2, 4, 6), torch.zeros(2, 4, 6)).item() == 0.0


def test_gaussian_kl_mask_excludes_frames():
    mean = torch.zeros(2, 3, 4)
    logvar = torch.zeros(2, 3, 4)
    mean[0, :, :2] = 1.0  # valid frames: KL = 0.5 * 3 = 1.5 each
    mean[1, :, 3] = 1e3  # a padded frame with a huge value
    logvar[1, :, 3] = 1e3  # would overflow exp() if it were not excluded
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]], dtype=torch.bool)
    mean.requires_grad_(True)
    logvar.requires_grad_(True)
    kl = gaussian_kl(mean, logvar, mask)
    # (1.5 + 1.5 + 0 + 0 + 0) / 5 valid frames
    assert kl.item() == pytest.approx(3.0 / 5.0)
    kl.backward()
    assert torch.isfinite(logvar.grad).all() and logvar.grad[1, :, 3].abs().sum() == 0


# --- SSL teacher and distillation --------------------------------------------------------------

TINY_WAVLM = dict(
    extractor_mode="group_norm",
    extractor_conv_layer_config=[
        (16, 10, 5),
        (16, 3, 2),
        (16, 3, 2),
        (16, 3, 2),
        (16, 3, 2),
        (16, 2, 2),
        (16, 2, 2),
    ],
    extractor_conv_bias=False,
    encoder_embed_dim=64,
    encoder_projection_dropout=0.0,
    encoder_pos_conv_kernel=16,
    encoder_pos_conv_groups=4,
    encoder_num_layers=2,
    encoder_num_heads=4,
    encoder_num_buckets=32,
    encoder_max_distance=100,
    encoder_attention_dropout=0.0,
    encoder_ff_interm_features=128,
    encoder_ff_interm_dropout=0.0,
    encoder_dropout=0.0,
    encoder_layer_norm_first=False,
    encoder_layer_drop=0.0,
    aux_num_out=None,
)


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
