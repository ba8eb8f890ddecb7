"""Waveform discriminators for VAE-GAN training of the audio codec.

Two families, both judging 24 kHz mono audio ``[B, 1, T]``:

- :class:`MultiScaleSTFTDiscriminator` (EnCodec style): one 2-D conv net per STFT resolution, looking
  at the complex spectrogram (real and imaginary parts as two channels), so it can judge phase too.
- :class:`MultiPeriodDiscriminator` (HiFi-GAN style): one 2-D conv net per period ``p``, looking at
  the waveform folded into ``[T/p, p]`` so that periodic structure lines up in columns.

Every discriminator here returns one ``(logits, feature_maps)`` pair per sub-discriminator, in a flat
list, so :class:`CombinedDiscriminator` can simply concatenate them and the losses in
``pockettts.losses.adversarial`` never need to know which family produced an entry. The discriminators
are not causal and need not be: they only run during training.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

DiscriminatorOutput = list[tuple[Tensor, list[Tensor]]]


def _check_audio(audio: Tensor) -> None:
    if audio.dim() != 3 or audio.shape[1] != 1:
        raise ValueError(f"discriminators expect mono audio shaped [B, 1, T], got {tuple(audio.shape)}")


def _wn_conv2d(
    in_channels: int,
    out_channels: int,
    kernel_size: tuple[int, int],
    stride: tuple[int, int] = (1, 1),
    dilation: tuple[int, int] = (1, 1),
) -> nn.Module:
    """A weight-normalised Conv2d with 'same' padding (before striding) on both axes."""
    padding = tuple((k - 1) * d // 2 for k, d in zip(kernel_size, dilation))
    conv = nn.Conv2d(
        in_channels, out_channels, kernel_size, stride=stride, dilation=dilation, padding=padding
    )
    return weight_norm(conv)


class STFTSubDiscriminator(nn.Module):
    """One resolution of the multi-scale STFT discriminator.

    Input ``[B, 1, T]`` → complex STFT ``[B, 2, frames, n_fft//2 + 1]`` (time first, frequency second)
    → convs. Time is dilated (1, 2, 4 by default) and frequency strided by 2 in the middle convs, so
    the receptive field grows along time while the frequency axis shrinks.
    Returns ``(logits [B, 1, frames, F'], features)`` with one feature map per conv before the post conv.
    """

    def __init__(
        self,
        n_fft: int,
        channels: int = 32,
        hop_length: int | None = None,
        kernel_size: tuple[int, int] = (3, 9),
        dilations: Sequence[int] = (1, 2, 4),
        negative_slope: float = 0.2,
    ):
        super().__init__()
        self.n_fft = n_fft
        self.hop_length = hop_length or n_fft // 4
        # Not persistent: a derived constant, it should move with .to() but not live in checkpoints.
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        convs = [_wn_conv2d(2, channels, kernel_size)]
        for dilation in dilations:
            convs.append(_wn_conv2d(channels, channels, kernel_size, stride=(1, 2), dilation=(dilation, 1)))
        convs.append(_wn_conv2d(channels, channels, (3, 3)))
        self.convs = nn.ModuleList(convs)
        self.post = _wn_conv2d(channels, 1, (3, 3))
        self.activation = nn.LeakyReLU(negative_slope)

    def spectrogram(self, audio: Tensor) -> Tensor:
        """``[B, 1, T]`` → ``[B, 2, frames, n_fft//2 + 1]`` in float32, whatever autocast says."""
        if audio.shape[-1] < self.n_fft:
            raise ValueError(
                f"audio of {audio.shape[-1]} samples is shorter than the STFT discriminator's "
                f"n_fft={self.n_fft}; use longer training segments or smaller n_ffts"
            )
        # FFTs in half precision are inaccurate or unsupported, so autocast is switched off here.
        with torch.autocast(device_type=audio.device.type, enabled=False):
            spec = torch.stft(
                audio.squeeze(1).float(),
                n_fft=self.n_fft,
                hop_length=self.hop_length,
                win_length=self.n_fft,
                window=self.window.float(),
                center=False,
                normalized=True,
                return_complex=True,
            )  # [B, F, frames]
            spec = torch.stack([spec.real, spec.imag], dim=1)  # [B, 2, F, frames]
        return spec.transpose(2, 3)

    def forward(self, audio: Tensor) -> tuple[Tensor, list[Tensor]]:
        x = self.spectrogram(audio)
        features = []
        for conv in self.convs:
            x = self.activation(conv(x))
            features.append(x)
        return self.post(x), features


class MultiScaleSTFTDiscriminator(nn.Module):
    """EnCodec's MS-STFT discriminator: one :class:`STFTSubDiscriminator` per FFT size.

    ``forward(audio [B, 1, T])`` returns ``len(n_ffts)`` pairs of ``(logits, features)``.
    """

    def __init__(
        self,
        n_ffts: Sequence[int] = (1024, 2048, 512, 256, 128),
        channels: int = 32,
        kernel_size: tuple[int, int] = (3, 9),
        dilations: Sequence[int] = (1, 2, 4),
        negative_slope: float = 0.2,
    ):
        super().__init__()
        self.discriminators = nn.ModuleList(
            STFTSubDiscriminator(
                n_fft,
                channels=channels,
                kernel_size=tuple(kernel_size),
                dilations=dilations,
                negative_slope=negative_slope,
            )
            for n_fft in n_ffts
        )

    def forward(self, audio: Tensor) -> DiscriminatorOutput:
        _check_audio(audio)
        return [disc(audio) for disc in self.discriminators]


class PeriodSubDiscriminator(nn.Module):
    """One period of the multi-period discriminator.

    Input ``[B, 1, T]`` is reflect-padded to a multiple of ``period`` and folded to
    ``[B, 1, T/period, period]``; kernels span only the first axis, so each column (one phase of the
    period) is processed independently. All convs but the last stride by 3 along time.
    Returns ``(logits [B, 1, T'', period], features)`` with one feature map per conv.
    """

    def __init__(
        self,
        period: int,
        channels: Sequence[int] = (32, 128, 512, 1024, 1024),
        kernel_size: int = 5,
        stride: int = 3,
        negative_slope: float = 0.1,
    ):
        super().__init__()
        self.period = period
        convs = []
        in_channels = 1
        for i, out_channels in enumerate(channels):
            layer_stride = stride if i < len(channels) - 1 else 1
            convs.append(_wn_conv2d(in_channels, out_channels, (kernel_size, 1), stride=(layer_stride, 1)))
            in_channels = out_channels
        self.convs = nn.ModuleList(convs)
        self.post = _wn_conv2d(in_channels, 1, (3, 1))
        self.activation = nn.LeakyReLU(negative_slope)

    def forward(self, audio: Tensor) -> tuple[Tensor, list[Tensor]]:
        remainder = audio.shape[-1] % self.period
        if remainder:
            audio = F.pad(audio, (0, self.period - remainder), mode="reflect")
        batch, _, length = audio.shape
        x = audio.reshape(batch, 1, length // self.period, self.period)
        features = []
        for conv in self.convs:
            x = self.activation(conv(x))
            features.append(x)
        return self.post(x), features


class MultiPeriodDiscriminator(nn.Module):
    """HiFi-GAN's MPD: one :class:`PeriodSubDiscriminator` per period (primes, so periods don't overlap).

    ``forward(audio [B, 1, T])`` returns ``len(periods)`` pairs of ``(logits, features)``.
    """

    def __init__(
        self,
        periods: Sequence[int] = (2, 3, 5, 7, 11),
        channels: Sequence[int] = (32, 128, 512, 1024, 1024),
        kernel_size: int = 5,
        stride: int = 3,
        negative_slope: float = 0.1,
    ):
        super().__init__()
        self.discriminators = nn.ModuleList(
            PeriodSubDiscriminator(
                period,
                channels=channels,
                kernel_size=kernel_size,
                stride=stride,
                negative_slope=negative_slope,
            )
            for period in periods
        )

    def forward(self, audio: Tensor) -> DiscriminatorOutput:
        _check_audio(audio)
        return [disc(audio) for disc in self.discriminators]


class CombinedDiscriminator(nn.Module):
    """Several discriminators judged as one: their sub-discriminator outputs are concatenated in order."""

    def __init__(self, discriminators: Sequence[nn.Module]):
        super().__init__()
        if len(discriminators) == 0:
            raise ValueError("CombinedDiscriminator needs at least one discriminator")
        self.discriminators = nn.ModuleList(discriminators)

    def forward(self, audio: Tensor) -> DiscriminatorOutput:
        _check_audio(audio)
        outputs: DiscriminatorOutput = []
        for disc in self.discriminators:
            outputs.extend(disc(audio))
        return outputs
