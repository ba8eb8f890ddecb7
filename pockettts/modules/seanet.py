"""SEANet encoder and decoder (the convolutional halves of the Mimi codec), causal and streaming.

Layer lists follow the released Pocket TTS codec one for one (activations included), so parameter
names such as ``encoder.model.3.conv.weight`` are the same in both code bases.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pockettts.modules.conv import StreamingConv1d, StreamingConvTranspose1d
from pockettts.modules.streaming import State, StreamingModule, child_state


def _run_layers(layers: nn.ModuleList, name: str, x: torch.Tensor, state: State | None) -> torch.Tensor:
    """Apply ``layers`` (the child called ``name``) in order, each streaming layer with its sub-state."""
    for index, layer in enumerate(layers):
        if isinstance(layer, StreamingModule):
            x = layer(x, child_state(state, f"{name}.{index}"))
        else:
            x = layer(x)
    return x


class SEANetResnetBlock(StreamingModule):
    """``x + conv_k1(ELU(conv_k(ELU(x))))`` with the hidden width ``dim // compress``."""

    def __init__(
        self,
        dim: int,
        kernel_size: int = 3,
        dilation: int = 1,
        compress: int = 2,
        pad_mode: str = "constant",
        weight_norm: bool = False,
    ):
        super().__init__()
        hidden = dim // compress
        self.block = nn.ModuleList(
            [
                nn.ELU(),
                StreamingConv1d(
                    dim, hidden, kernel_size, dilation=dilation, pad_mode=pad_mode, weight_norm=weight_norm
                ),
                nn.ELU(),
                StreamingConv1d(hidden, dim, 1, pad_mode=pad_mode, weight_norm=weight_norm),
            ]
        )

    def forward(self, x: torch.Tensor, state: State | None = None) -> torch.Tensor:
        """``[B, C, T]`` -> ``[B, C, T]``."""
        return x + _run_layers(self.block, "block", x, state)


class SEANetEncoder(StreamingModule):
    """Waveform ``[B, channels, T]`` -> features ``[B, dimension, T // hop_length]``.

    ``ratios`` are given decoder-first as in the released configs (e.g. ``[6, 5, 4]``) and applied
    in reverse (strides 4, 5, 6 for a hop of 120 samples, 200 Hz at 24 kHz).
    """

    def __init__(
        self,
        channels: int = 1,
        dimension: int = 512,
        n_filters: int = 64,
        n_residual_layers: int = 1,
        ratios: Sequence[int] = (6, 5, 4),
        kernel_size: int = 7,
        last_kernel_size: int = 3,
        residual_kernel_size: int = 3,
        dilation_base: int = 2,
        compress: int = 2,
        pad_mode: str = "constant",
        weight_norm: bool = False,
    ):
        super().__init__()
        self.dimension = dimension
        self.hop_length = int(torch.tensor(list(ratios)).prod())

        def conv(*args, **kwargs) -> StreamingConv1d:
            return StreamingConv1d(*args, pad_mode=pad_mode, weight_norm=weight_norm, **kwargs)

        width = n_filters
        layers: list[nn.Module] = [conv(channels, width, kernel_size)]
        for ratio in reversed(list(ratios)):
            layers += [
                SEANetResnetBlock(
                    width, residual_kernel_size, dilation_base**j, compress, pad_mode, weight_norm
                )
                for j in range(n_residual_layers)
            ]
            layers += [nn.ELU(), conv(width, 2 * width, 2 * ratio, stride=ratio)]
            width *= 2
        layers += [nn.ELU(), conv(width, dimension, last_kernel_size)]
        self.model = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor, state: State | None = None) -> torch.Tensor:
        return _run_layers(self.model, "model", x, state)


class SEANetDecoder(StreamingModule):
    """Features ``[B, dimension, F]`` -> waveform ``[B, channels, F * hop_length]`` (ratios in order)."""

    def __init__(
        self,
        channels: int = 1,
        dimension: int = 512,
        n_filters: int = 64,
        n_residual_layers: int = 1,
        ratios: Sequence[int] = (6, 5, 4),
        kernel_size: int = 7,
        last_kernel_size: int = 3,
        residual_kernel_size: int = 3,
        dilation_base: int = 2,
        compress: int = 2,
        pad_mode: str = "constant",
        weight_norm: bool = False,
    ):
        super().__init__()
        self.dimension = dimension
        self.hop_length = int(torch.tensor(list(ratios)).prod())
        width = n_filters * 2 ** len(ratios)
        layers: list[nn.Module] = [
            StreamingConv1d(dimension, width, kernel_size, pad_mode=pad_mode, weight_norm=weight_norm)
        ]
        for ratio in ratios:
            layers += [
                nn.ELU(),
                StreamingConvTranspose1d(width, width // 2, 2 * ratio, stride=ratio, weight_norm=weight_norm),
            ]
            width //= 2
            layers += [
                SEANetResnetBlock(
                    width, residual_kernel_size, dilation_base**j, compress, pad_mode, weight_norm
                )
                for j in range(n_residual_layers)
            ]
        layers += [
            nn.ELU(),
            StreamingConv1d(width, channels, last_kernel_size, pad_mode=pad_mode, weight_norm=weight_norm),
        ]
        self.model = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor, state: State | None = None) -> torch.Tensor:
        return _run_layers(self.model, "model", x, state)
