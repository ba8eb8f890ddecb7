"""Spectral losses: multi-scale mel, multi-resolution STFT and the mel distance metric."""

from __future__ import annotations

import math

import pytest
import torch

from pockettts.losses.spectral import MultiResolutionSTFTLoss, MultiScaleMelLoss, mel_distance
from tests.support import speechlike

SR = 24_000


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
