"""Spectral reconstruction losses and the fixed mel-distance metric.

Everything here runs in float32 with autocast switched off: FFTs and logs of small magnitudes are
where bf16 loses the most, and the losses are cheap next to the models.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torchaudio
from torch import Tensor, nn


def _check_pair(pred: Tensor, target: Tensor) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"prediction and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
    if pred.dim() != 3 or pred.shape[1] != 1:
        raise ValueError(f"spectral losses expect mono audio shaped [B, 1, T], got {tuple(pred.shape)}")


def _drop_buffers_from_state_dict(module: nn.Module) -> None:
    """Make every buffer non-persistent: window and filterbanks are derived from the constructor
    arguments, so saving them would only tie checkpoints to the loss configuration."""
    for submodule in module.modules():
        for name, buffer in list(submodule.named_buffers(recurse=False)):
            submodule.register_buffer(name, buffer, persistent=False)


def _mel_transform(
    sample_rate: int, n_fft: int, hop_length: int, n_mels: int, f_min: float, f_max: float | None
) -> torchaudio.transforms.MelSpectrogram:
    return torchaudio.transforms.MelSpectrogram(
        sample_rate=sample_rate,
        n_fft=n_fft,
        hop_length=hop_length,
        f_min=f_min,
        f_max=f_max,
        n_mels=n_mels,
        power=1.0,
        center=True,
        pad_mode="reflect",
        norm="slaney",
        mel_scale="slaney",
    )


class MultiScaleMelLoss(nn.Module):
    """DAC-style multi-scale mel loss: per scale, L1 of ``log10(clamp(mel, eps))`` (weight
    ``log_weight``) plus L1 of the linear mel magnitudes (weight ``linear_weight``), averaged over scales.

    Magnitude (power 1) Slaney mels, hop ``n_fft // 4``. ``forward(pred [B, 1, T], target [B, 1, T])``
    returns a float32 scalar. The mel transforms are submodules (they follow ``.to(device)``); they
    hold no parameters and nothing in the state dict.
    """

    def __init__(
        self,
        sample_rate: int = 24000,
        n_ffts: Sequence[int] = (32, 64, 128, 256, 512, 1024, 2048),
        n_mels: Sequence[int] = (5, 10, 20, 40, 80, 160, 320),
        log_weight: float = 1.0,
        linear_weight: float = 0.0,
        clamp_eps: float = 1e-5,
        f_min: float = 0.0,
        f_max: float | None = None,
    ):
        super().__init__()
        if len(n_ffts) != len(n_mels):
            raise ValueError(
                f"n_ffts ({len(n_ffts)} scales) and n_mels ({len(n_mels)}) must have equal length"
            )
        self.log_weight = log_weight
        self.linear_weight = linear_weight
        self.clamp_eps = clamp_eps
        self.mels = nn.ModuleList(
            _mel_transform(sample_rate, n_fft, n_fft // 4, mels, f_min, f_max)
            for n_fft, mels in zip(n_ffts, n_mels)
        )
        _drop_buffers_from_state_dict(self)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        _check_pair(pred, target)
        with torch.autocast(device_type=pred.device.type, enabled=False):
            pred, target = pred.float(), target.float()
            losses = []
            for mel in self.mels:
                pred_mel, target_mel = mel(pred), mel(target)
                loss = pred.new_zeros(())
                if self.log_weight:
                    log_pred = pred_mel.clamp_min(self.clamp_eps).log10()
                    log_target = target_mel.clamp_min(self.clamp_eps).log10()
                    loss = loss + self.log_weight * (log_pred - log_target).abs().mean()
                if self.linear_weight:
                    loss = loss + self.linear_weight * (pred_mel - target_mel).abs().mean()
                losses.append(loss)
            return torch.stack(losses).mean()


class MultiResolutionSTFTLoss(nn.Module):
    """Parallel WaveGAN's multi-resolution STFT loss: spectral convergence + L1 of log magnitudes.

    Per resolution: ``SC = ||S_t - S_p||_F / ||S_t||_F`` (per item, then batch mean) and
    ``mean |log S_t - log S_p|``, magnitudes clamped at ``eps``. The two are summed with their weights
    and averaged over resolutions. Hop defaults to ``n_fft // 4``, window length to ``n_fft`` (Hann).
    """

    def __init__(
        self,
        fft_sizes: Sequence[int] = (512, 1024, 2048),
        hop_sizes: Sequence[int] | None = None,
        win_lengths: Sequence[int] | None = None,
        sc_weight: float = 1.0,
        log_mag_weight: float = 1.0,
        eps: float = 1e-7,
    ):
        super().__init__()
        hop_sizes = list(hop_sizes) if hop_sizes is not None else [n // 4 for n in fft_sizes]
        win_lengths = list(win_lengths) if win_lengths is not None else list(fft_sizes)
        if not len(fft_sizes) == len(hop_sizes) == len(win_lengths):
            raise ValueError(
                f"fft_sizes, hop_sizes and win_lengths must have equal length, got "
                f"{len(fft_sizes)}, {len(hop_sizes)}, {len(win_lengths)}"
            )
        for n_fft, win in zip(fft_sizes, win_lengths):
            if win > n_fft:
                raise ValueError(f"win_length {win} is longer than its n_fft {n_fft}")
        self.resolutions = list(zip(fft_sizes, hop_sizes, win_lengths))
        self.sc_weight = sc_weight
        self.log_mag_weight = log_mag_weight
        self.eps = eps
        for index, win in enumerate(win_lengths):
            self.register_buffer(f"window_{index}", torch.hann_window(win), persistent=False)

    def _magnitude(self, audio: Tensor, index: int) -> Tensor:
        n_fft, hop, win = self.resolutions[index]
        spec = torch.stft(
            audio.squeeze(1),
            n_fft=n_fft,
            hop_length=hop,
            win_length=win,
            window=getattr(self, f"window_{index}").float(),
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )  # [B, F, frames]
        return spec.abs().clamp_min(self.eps)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        _check_pair(pred, target)
        with torch.autocast(device_type=pred.device.type, enabled=False):
            pred, target = pred.float(), target.float()
            losses = []
            for index in range(len(self.resolutions)):
                pred_mag, target_mag = self._magnitude(pred, index), self._magnitude(target, index)
                diff_norm = torch.linalg.vector_norm(target_mag - pred_mag, dim=(1, 2))
                target_norm = torch.linalg.vector_norm(target_mag, dim=(1, 2)).clamp_min(self.eps)
                spectral_convergence = (diff_norm / target_norm).mean()
                log_magnitude = (target_mag.log() - pred_mag.log()).abs().mean()
                losses.append(self.sc_weight * spectral_convergence + self.log_mag_weight * log_magnitude)
            return torch.stack(losses).mean()


# The metric's definition is frozen so numbers stay comparable across runs
# ("log-mel L1": 1024-pt FFT, hop 256, 80 Slaney mels, natural log).
MEL_DISTANCE_N_FFT = 1024
MEL_DISTANCE_HOP = 256
MEL_DISTANCE_N_MELS = 80
MEL_DISTANCE_EPS = 1e-5

_mel_distance_cache: dict[tuple[int, str], torchaudio.transforms.MelSpectrogram] = {}


def mel_distance(pred: Tensor, target: Tensor, sample_rate: int) -> Tensor:
    """Evaluation metric: mean ``|ln mel(pred) - ln mel(target)|`` over batch, mels and frames.

    80 Slaney mels of the STFT magnitude (n_fft 1024, hop 256, Hann), clamped at 1e-5 before the log.
    ``pred`` and ``target`` are ``[B, 1, T]`` at ``sample_rate``; returns a float32 scalar tensor
    (no gradient is blocked, but it is meant for evaluation under ``torch.no_grad()``).
    """
    _check_pair(pred, target)
    key = (sample_rate, str(pred.device))
    if key not in _mel_distance_cache:
        mel = _mel_transform(
            sample_rate, MEL_DISTANCE_N_FFT, MEL_DISTANCE_HOP, MEL_DISTANCE_N_MELS, 0.0, None
        )
        _mel_distance_cache[key] = mel.to(pred.device)
    mel = _mel_distance_cache[key]
    with torch.autocast(device_type=pred.device.type, enabled=False):
        log_pred = mel(pred.float()).clamp_min(MEL_DISTANCE_EPS).log()
        log_target = mel(target.float()).clamp_min(MEL_DISTANCE_EPS).log()
        return (log_pred - log_target).abs().mean()
