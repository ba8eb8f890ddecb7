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


class _RotationTable:
    """cos / sin of the angles of positions ``[0, n)``, grown by doubling: a streaming step then
    slices rows instead of recomputing them in every layer (the same values, computed once)."""

    def __init__(self) -> None:
        self.tables: dict[tuple[int, float, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}

    def get(self, start: int, length: int, head_dim: int, max_period: float, device: torch.device):
        key = (head_dim, max_period, device)
        cos, sin = self.tables.get(key, (None, None))
        if cos is None or cos.shape[0] < start + length:
            size = max(2 * (start + length), 1024)
            # never inference tensors: a table first built under inference_mode (latent caching,
            # validation) is reused by training steps, and autograd refuses inference tensors
            with torch.inference_mode(False):
                angles = rope_angles(torch.arange(size, device=device), head_dim, max_period)
                cos, sin = angles.cos(), angles.sin()
            self.tables[key] = (cos, sin)
        return cos[start : start + length, None, :], sin[start : start + length, None, :]  # [T, 1, D/2]


_TABLE = _RotationTable()


def apply_rope(x: torch.Tensor, offset: int = 0, max_period: float = 10_000.0) -> torch.Tensor:
    """Rotate ``x``: ``[B, T, H, D]`` whose first time step sits at absolute position ``offset``."""
    _, length, _, head_dim = x.shape
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even head dimension, got {head_dim}")
    cos, sin = _TABLE.get(offset, length, head_dim, max_period, x.device)
    pairs = x.float().unflatten(-1, (head_dim // 2, 2))
    real, imag = pairs[..., 0], pairs[..., 1]
    rotated = torch.stack([real * cos - imag * sin, real * sin + imag * cos], dim=-1)
    return rotated.flatten(-2).to(x.dtype)
