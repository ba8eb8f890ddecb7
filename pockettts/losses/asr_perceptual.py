"""A perceptual loss from a frozen speech recogniser's encoder (Whisper): decoded audio should look,
to the encoder that has to recognise it, like the original.

The mel loss treats every time-frequency cell alike; a small codec trained on it alone spends its
capacity on what is loud rather than on what tells one phone from another (its reconstructions of
the demo corpus stay at ≈ 44% WER with Whisper base while the mel distance keeps creeping down).
Matching the hidden states of a recogniser's encoder weights the errors by what speech recognition
depends on, as feature-matching losses on self-supervised speech models do in codec and enhancement
work. Not part of Pocket TTS (its codec distils WavLM into the latent instead:
``ssl_distillation``); Whisper is what this environment can load offline. Evaluate with a
*different* recogniser than the loss's (here: the loss uses tiny.en, the codec report Whisper base)
so that the report does not just reward fitting one model.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchaudio
from torch import Tensor, nn

from pockettts.whisper import (
    WHISPER_SAMPLE_RATE,
    load_whisper_model,
    whisper_encoder_states,
    whisper_log_mel,
)


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
        waveform = torchaudio.functional.resample(audio.squeeze(1), self.sample_rate, WHISPER_SAMPLE_RATE)
        return whisper_encoder_states(self.encoder, whisper_log_mel(waveform, self.n_mels))

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
