"""Rotary position embedding (Su et al. 2021) in the interleaved convention of Pocket TTS.

Channel pairs ``(2i, 2i + 1)`` of each head are rotated by ``position * max_period ** (-2i / D)``;
the rotation is computed in float32 whatever the activation dtype.
"""

from __future__ import annotations

import math

import torch


def rope_angles(positions: torch.Tensor, head_dim: int, max_period: float) -> torch.Tensor:
    """``positions``: ``[T]`` float -> angles ``[T, head_dim // 2]``."""
    exponents = torch.arange(head_dim // 2, device=positions.device, dtype=torch.float32)
    frequencies = torch.exp(exponents * (-2.0 * math.log(max_period) / head_dim))
    return positions.float()[:, None] * frequencies


def apply_rope(x: torch.Tensor, offset: int = 0, max_period: float = 10_000.0) -> torch.Tensor:
    """Rotate ``x``: ``[B, T, H, D]`` whose first time step sits at absolute position ``offset``."""
    _, length, _, head_dim = x.shape
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even head dimension, got {head_dim}")
    positions = torch.arange(offset, offset + length, device=x.device)
    angles = rope_angles(positions, head_dim, max_period)[:, None, :]  # [T, 1, D/2]
    cos, sin = angles.cos(), angles.sin()
    pairs = x.float().unflatten(-1, (head_dim // 2, 2))
    real, imag = pairs[..., 0], pairs[..., 1]
    rotated = torch.stack([real * cos - imag * sin, real * sin + imag * cos], dim=-1)
    return rotated.flatten(-2).to(x.dtype)
