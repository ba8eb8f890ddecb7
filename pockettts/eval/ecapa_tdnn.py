"""ECAPA-TDNN speaker head (Desplanques et al., 2020) in the variant of UniSpeech's speaker
verification recipe, the head behind the SIM-o of Seed-TTS-eval and F5-TTS.

That variant (``ECAPA_TDNN_SMALL`` in microsoft/UniSpeech
``downstreams/speaker_verification/models/ecapa_tdnn.py``) differs from the paper's in details that
change the numbers, kept here: every conv block applies ReLU *before* batch norm, the three
SE-Res2 blocks keep one width (no shortcut projection), the attentive statistics pooling has no
global context, and the embedding is 256-d. Inputs are frame features ``[B, D, T]`` (WavLM's
hidden states in the speaker embedder, see :mod:`pockettts.eval.wavlm_ecapa`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

RES2_SCALE = 8  # channel groups of each Res2 convolution
SE_BOTTLENECK = 128
ATTENTION_CHANNELS = 128
BLOCK_DILATIONS = (2, 3, 4)


class ConvReluNorm(nn.Module):
    """Conv1d -> ReLU -> BatchNorm1d: ``[B, C_in, T] -> [B, C_out, T]`` (length kept by ``padding``)."""

    def __init__(self, channels_in: int, channels_out: int, kernel_size: int = 1, padding: int = 0,
                 dilation: int = 1):  # fmt: skip
        super().__init__()
        self.conv = nn.Conv1d(channels_in, channels_out, kernel_size, padding=padding, dilation=dilation)
        self.norm = nn.BatchNorm1d(channels_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(F.relu(self.conv(x)))


class Res2Conv(nn.Module):
    """Res2Net's hierarchical convolution: the channels split into ``RES2_SCALE`` groups; group *i*
    (after the first) is convolved after adding the previous group's output, the last group passes
    through untouched. ``[B, C, T] -> [B, C, T]``."""

    def __init__(self, channels: int, kernel_size: int, dilation: int):
        super().__init__()
        if channels % RES2_SCALE:
            raise ValueError(f"channels ({channels}) must be a multiple of {RES2_SCALE}")
        self.width = channels // RES2_SCALE
        padding = dilation * (kernel_size - 1) // 2
        self.convs = nn.ModuleList(
            nn.Conv1d(self.width, self.width, kernel_size, padding=padding, dilation=dilation)
            for _ in range(RES2_SCALE - 1)
        )
        self.norms = nn.ModuleList(nn.BatchNorm1d(self.width) for _ in range(RES2_SCALE - 1))

    def forward(self, x: Tensor) -> Tensor:
        groups = torch.split(x, self.width, dim=1)
        outputs, previous = [], None
        for group, conv, norm in zip(groups, self.convs, self.norms):
            previous = norm(F.relu(conv(group if previous is None else previous + group)))
            outputs.append(previous)
        return torch.cat([*outputs, groups[-1]], dim=1)


class SqueezeExcite(nn.Module):
    """Channel gates from the time average: ``[B, C, T] -> [B, C, T]``."""

    def __init__(self, channels: int):
        super().__init__()
        self.squeeze = nn.Linear(channels, SE_BOTTLENECK)
        self.expand = nn.Linear(SE_BOTTLENECK, channels)

    def forward(self, x: Tensor) -> Tensor:
        gates = torch.sigmoid(self.expand(F.relu(self.squeeze(x.mean(dim=2)))))
        return x * gates[:, :, None]


class SERes2Block(nn.Module):
    """1x1 conv, dilated Res2 conv, 1x1 conv, squeeze-excitation, plus the input: ``[B, C, T]`` kept."""

    def __init__(self, channels: int, dilation: int, kernel_size: int = 3):
        super().__init__()
        self.expand = ConvReluNorm(channels, channels)
        self.res2 = Res2Conv(channels, kernel_size, dilation)
        self.project = ConvReluNorm(channels, channels)
        self.excite = SqueezeExcite(channels)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.excite(self.project(self.res2(self.expand(x))))


class AttentiveStatsPool(nn.Module):
    """Attention-weighted mean and standard deviation over time, per channel: ``[B, C, T] -> [B, 2C]``."""

    def __init__(self, channels: int):
        super().__init__()
        self.attention_hidden = nn.Conv1d(channels, ATTENTION_CHANNELS, kernel_size=1)
        self.attention_out = nn.Conv1d(ATTENTION_CHANNELS, channels, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        weights = torch.softmax(self.attention_out(torch.tanh(self.attention_hidden(x))), dim=2)
        mean = (weights * x).sum(dim=2)
        variance = (weights * x.square()).sum(dim=2) - mean.square()
        return torch.cat([mean, variance.clamp(min=1e-9).sqrt()], dim=1)


class EcapaTdnn(nn.Module):
    """Frame features ``[B, feature_dim, T]`` -> speaker embedding ``[B, embedding_dim]`` (not normalised).

    ``channels`` (512) is the width of the blocks, ``merged_channels`` (1536) that of the layer that
    joins their outputs before pooling.
    """

    def __init__(self, feature_dim: int, channels: int = 512, merged_channels: int = 1536,
                 embedding_dim: int = 256):  # fmt: skip
        super().__init__()
        self.frame = ConvReluNorm(feature_dim, channels, kernel_size=5, padding=2)
        self.blocks = nn.ModuleList(SERes2Block(channels, dilation) for dilation in BLOCK_DILATIONS)
        self.merge = nn.Conv1d(channels * len(BLOCK_DILATIONS), merged_channels, kernel_size=1)
        self.pool = AttentiveStatsPool(merged_channels)
        self.pool_norm = nn.BatchNorm1d(2 * merged_channels)
        self.embedding = nn.Linear(2 * merged_channels, embedding_dim)

    def forward(self, features: Tensor) -> Tensor:
        x = self.frame(features)
        block_outputs = []
        for block in self.blocks:
            x = block(x)
            block_outputs.append(x)
        merged = F.relu(self.merge(torch.cat(block_outputs, dim=1)))
        return self.embedding(self.pool_norm(self.pool(merged)))
