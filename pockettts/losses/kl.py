"""KL divergence of the VAE's diagonal Gaussian posterior from the standard normal prior."""

from __future__ import annotations

import torch
from torch import Tensor


def gaussian_kl(mean: Tensor, logvar: Tensor, lengths_mask: Tensor | None = None) -> Tensor:
    """``KL(N(mean, exp(logvar)) || N(0, I))`` per latent frame, averaged over frames; float32 scalar.

    Normalisation (it sets the scale of the configured KL weight): the closed form
    ``0.5 * (mean^2 + exp(logvar) - logvar - 1)`` is **summed over the D latent channels** and
    **averaged over all valid (batch, frame) positions**, i.e. it is the KL in nats per latent frame,
    not per element (per element it would be D times smaller).

    Args:
        mean, logvar: ``[B, D, T]`` posterior parameters.
        lengths_mask: optional ``[B, T]`` (bool or 0/1), true for real frames; padded frames are ignored
            and the mean is taken over the valid frames of the whole batch.
    """
    if mean.shape != logvar.shape or mean.dim() != 3:
        raise ValueError(
            f"mean and logvar must both be [B, D, T], got {tuple(mean.shape)} and {tuple(logvar.shape)}"
        )
    mean, logvar = mean.float(), logvar.float()
    if lengths_mask is not None:
        expected_shape = (mean.shape[0], mean.shape[2])
        if tuple(lengths_mask.shape) != expected_shape:
            raise ValueError(
                f"lengths_mask must be [B, T] = {expected_shape}, got {tuple(lengths_mask.shape)}"
            )
        valid = lengths_mask.bool().unsqueeze(1)  # [B, 1, T]
        # Zero the padded inputs (not just the outputs): a huge logvar in padding would otherwise
        # give inf * 0 = NaN gradients through exp().
        mean = torch.where(valid, mean, torch.zeros_like(mean))
        logvar = torch.where(valid, logvar, torch.zeros_like(logvar))
    per_frame = 0.5 * (mean.pow(2) + logvar.exp() - logvar - 1.0).sum(dim=1)  # [B, T]
    if lengths_mask is None:
        return per_frame.mean()
    # Padded frames contribute exactly 0 (the KL of N(0, 1) from itself).
    return per_frame.sum() / lengths_mask.bool().sum().clamp_min(1).to(per_frame.dtype)
