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
    """The rotations ``e^{i·angle}`` (complex) of positions ``[0, n)``, grown by doubling: a streaming
    step then slices rows instead of recomputing them in every layer (the same values, computed once)."""

    def __init__(self) -> None:
        self.tables: dict[tuple[int, float, torch.device], torch.Tensor] = {}

    def get(self, start: int, length: int, head_dim: int, max_period: float, device: torch.device):
        key = (head_dim, max_period, device)
        table = self.tables.get(key)
        if table is None or table.shape[0] < start + length:
            size = max(2 * (start + length), 1024)
            # never inference tensors: a table first built under inference_mode (latent caching,
            # validation) is reused by training steps, and autograd refuses inference tensors
            with torch.inference_mode(False):
                angles = rope_angles(torch.arange(size, device=device), head_dim, max_period)
                table = torch.polar(torch.ones_like(angles), angles)
            self.tables[key] = table
        return table[start : start + length, None, :]  # [T, 1, D/2]


_TABLE = _RotationTable()


def apply_rope(x: torch.Tensor, offset: int = 0, max_period: float = 10_000.0) -> torch.Tensor:
    """Rotate ``x``: ``[B, T, H, D]`` whose first time step sits at absolute position ``offset``."""
    _, length, _, head_dim = x.shape
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even head dimension, got {head_dim}")
    rotation = _TABLE.get(offset, length, head_dim, max_period, x.device)
    # each channel pair as one complex number: the rotation is one product (a third of the ops of the
    # written-out cos/sin form, the same arithmetic; a streaming step's cost is its number of ops)
    pairs = torch.view_as_complex(x.float().contiguous().unflatten(-1, (head_dim // 2, 2)))
    return torch.view_as_real(pairs * rotation).flatten(-2).to(x.dtype)
