"""Discriminators: output structure for tiny configs, gradients to the input, float32 STFT under autocast."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils import parametrize

from pockettts.modules.discriminators import (
    CombinedDiscriminator,
    MultiPeriodDiscriminator,
    MultiScaleSTFTDiscriminator,
)


def tiny_stft(n_ffts=(64, 128)) -> MultiScaleSTFTDiscriminator:
    return MultiScaleSTFTDiscriminator(n_ffts=n_ffts, channels=4)


def tiny_mpd(periods=(2, 3, 5)) -> MultiPeriodDiscriminator:
    return MultiPeriodDiscriminator(periods=periods, channels=(4, 8, 8))


@pytest.fixture
def audio() -> torch.Tensor:
    torch.manual_seed(0)
    return 0.1 * torch.randn(2, 1, 1001)  # odd length: not a multiple of any period


def test_stft_discriminator_structure(audio):
    outputs = tiny_stft()(audio)
    assert len(outputs) == 2
    for n_fft, (logits, features) in zip((64, 128), outputs):
        frames = (audio.shape[-1] - n_fft) // (n_fft // 4) + 1
        bins = n_fft // 2 + 1
        # first conv + 3 dilated/strided convs + the (3, 3) conv
        assert len(features) == 5
        assert features[0].shape == (2, 4, frames, bins)
        freq = bins
        for _ in range(3):
            freq = (freq - 1) // 2 + 1
        assert features[-1].shape == (2, 4, frames, freq)
        assert logits.shape == (2, 1, frames, freq)


def test_period_discriminator_structure(audio):
    outputs = tiny_mpd()(audio)
    assert len(outputs) == 3
    for period, (logits, features) in zip((2, 3, 5), outputs):
        assert len(features) == 3
        assert [f.shape[1] for f in features] == [4, 8, 8]
        # the period axis is preserved through every layer
        assert all(f.shape[-1] == period for f in features)
        rows = -(-audio.shape[-1] // period)  # padded length / period
        for _ in range(2):  # two strided convs, the last one has stride 1
            rows = (rows - 1) // 3 + 1
        assert logits.shape == (2, 1, rows, period)


def test_combined_concatenates_in_order(audio):
    stft, mpd = tiny_stft(), tiny_mpd()
    combined = CombinedDiscriminator([stft, mpd])
    outputs = combined(audio)
    assert len(outputs) == 5
    torch.testing.assert_close(outputs[0][0], stft(audio)[0][0])
    torch.testing.assert_close(outputs[-1][0], mpd(audio)[-1][0])


@pytest.mark.parametrize("make", [tiny_stft, tiny_mpd])
def test_gradients_reach_the_input_and_every_parameter(make, audio):
    disc = make()
    audio = audio.clone().requires_grad_(True)
    outputs = disc(audio)
    loss = sum(logits.mean() + sum(f.mean() for f in feats) for logits, feats in outputs)
    loss.backward()
    assert audio.grad is not None and audio.grad.abs().sum() > 0
    for name, param in disc.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name


@pytest.mark.parametrize("make", [tiny_stft, tiny_mpd])
def test_convs_are_weight_normalised(make):
    convs = [m for m in make().modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(parametrize.is_parametrized(conv, "weight") for conv in convs)


def test_stft_runs_in_float32_under_bf16_autocast(audio):
    disc = tiny_stft()
    rounded = audio.to(torch.bfloat16)  # what a bf16-autocast generator hands the discriminator
    with torch.no_grad():
        reference = disc(rounded.float())
        reference_spec = disc.discriminators[0].spectrogram(rounded.float())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = disc(rounded)
            mixed_spec = disc.discriminators[0].spectrogram(rounded)
    assert mixed_spec.dtype == torch.float32
    torch.testing.assert_close(mixed_spec, reference_spec, rtol=1e-6, atol=1e-7)
    # the convs after the STFT do run in bf16, so only loose agreement is expected there
    for (ref_logits, _), (mixed_logits, _) in zip(reference, mixed):
        assert torch.isfinite(mixed_logits.float()).all()
        torch.testing.assert_close(mixed_logits.float(), ref_logits, atol=0.05, rtol=0.05)


def test_bad_input_shapes_are_rejected():
    with pytest.raises(ValueError, match=r"\[B, 1, T\]"):
        tiny_mpd()(torch.randn(2, 1000))
    with pytest.raises(ValueError, match="n_fft=128"):
        tiny_stft()(torch.randn(1, 1, 100))
