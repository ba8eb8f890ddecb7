"""The Whisper-encoder perceptual loss (pockettts.losses.asr_perceptual) and the features it is built
on (pockettts.whisper): the same log-mel and encoder states as openai-whisper's own code, zero only
for identical audio, gradients to the prediction alone, the recogniser's weights outside the
module's state, and a VAE trained with it."""

from __future__ import annotations

import math

import pytest
import torch
import whisper

from pockettts.losses.asr_perceptual import WhisperFeatureLoss
from pockettts.models.vae import AudioVAE
from pockettts.whisper import load_whisper_model, whisper_encoder_states, whisper_log_mel
from tests.support import TINY_VAE


def _speechlike(seconds: float, seed: int, rate: int = 24_000) -> torch.Tensor:
    """``[1, 1, T]``: harmonics under a syllable-rate envelope (Whisper's features need structure)."""
    generator = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * rate)) / rate
    f0 = 110 + 60 * torch.rand(1, generator=generator)
    wave = sum(torch.sin(2 * math.pi * f0 * k * t) / k for k in range(1, 8))
    envelope = 0.5 + 0.5 * torch.sin(2 * math.pi * 4 * t + 6 * torch.rand(1, generator=generator))
    return (0.1 * wave * envelope)[None, None]


@pytest.fixture(scope="module")
def loss(tiny_en):
    return WhisperFeatureLoss(tiny_en[0])


def test_log_mel_is_whispers_own_per_item(tiny_en):
    audio = torch.randn(2, 16_000) * torch.tensor([[0.1], [0.001]])  # loud and quiet: per-item floors
    batch = whisper_log_mel(audio, n_mels=80)
    for item in range(2):
        expected = whisper.log_mel_spectrogram(audio[item])
        torch.testing.assert_close(batch[item], expected, rtol=1e-5, atol=1e-5)


def test_encoder_states_match_whispers_forward_on_30_seconds(tiny_en):
    model = load_whisper_model(tiny_en[0])
    mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(torch.randn(16_000 * 3) * 0.05))[None]
    with torch.no_grad():
        states = whisper_encoder_states(model.encoder, mel)
        expected = model.encoder(mel)
        torch.testing.assert_close(model.encoder.ln_post(states[-1]), expected, rtol=1e-4, atol=1e-4)
    assert len(states) == model.dims.n_audio_layer
    with pytest.raises(ValueError, match="at most 30 s"):
        whisper_encoder_states(model.encoder, torch.zeros(1, 80, 3002))


def test_zero_for_identical_audio_and_growing_with_the_distortion(loss):
    clean = _speechlike(1.2, seed=0)
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(1))
    assert loss(clean, clean).item() == 0.0
    slightly, badly = loss(clean + 0.003 * noise, clean).item(), loss(clean + 0.05 * noise, clean).item()
    assert 0 < slightly < badly
    assert loss(_speechlike(1.2, seed=2), clean).item() > slightly


def test_gradient_reaches_the_prediction_only_and_whisper_stays_out_of_the_state(loss):
    pred = _speechlike(0.8, seed=3).requires_grad_(True)
    target = _speechlike(0.8, seed=4).requires_grad_(True)
    loss(pred, target).backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    assert target.grad is None
    assert list(loss.parameters()) == [] and loss.state_dict() == {}
    assert not any(p.requires_grad for p in loss.encoder.parameters())
    with pytest.raises(ValueError, match=r"\[B, 1, T\]"):
        loss(pred[0], target[0])


def test_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        WhisperFeatureLoss(tmp_path / "nowhere.pt")


def test_the_vae_module_trains_its_decoder_on_the_asr_term(loss):
    """The term is one of VAETrainingModule's generator losses (weighted like the others) and falls
    on the batch it is trained on; an asr weight without the loss is refused."""
    from pockettts.training.vae_module import VAETrainingModule

    def module(**kwargs) -> VAETrainingModule:
        optimizer = torch.optim.Adam
        return VAETrainingModule(
            vae=AudioVAE(**TINY_VAE),
            discriminator=None,
            generator_optimizer=optimizer,
            ema_decay=None,
            **kwargs,
        )

    with pytest.raises(ValueError, match="asr_loss"):
        module(loss_weights=dict(asr=1.0))
    torch.manual_seed(0)
    training = module(loss_weights=dict(asr=1.0, kl=0.0), asr_loss=loss)
    audio = torch.cat([_speechlike(0.64, seed=s) for s in range(2)])
    optimizer = torch.optim.Adam(training.generator_parameters(), lr=3e-3)
    values = []
    for _ in range(15):
        out = training.vae(audio, sample=False)
        out["reconstruction"] = out["reconstruction"][..., : audio.shape[-1]]
        losses = training.generator_losses(audio, out)
        total = sum(training.loss_weights[name] * value for name, value in losses.items())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        values.append(losses["asr"].item())
    assert values[-1] < 0.8 * values[0], values
