"""The generation-head interface: from a backbone vector ``z`` to the next latent.

A head owns an AdaLN MLP (``flow_net``) and an objective. All heads share

* ``loss(z [N, C], x1 [N, D], mask [N] | None) -> (scalar, terms)``: the training loss averaged over the
  valid rows (each row repeated ``batch_multiplier`` times with independent noise and times), plus named
  detached scalars for logging;
* ``sample(z [N, C], noise [N, D], steps) -> [N, D]``: a latent from given noise. Temperature is the
  caller's business: scale the noise (``heads.sample_noise`` does it).

Convention (Pocket TTS): ``x1`` is the target latent, ``ε`` standard normal noise; the flow heads
interpolate ``x_t = t·x1 + (1 − t)·ε`` with ``t = 0`` at the noise. The heads themselves live in
``heads`` (flow heads and the registry) and ``one_step_heads`` (heads without a time input).
"""

from __future__ import annotations

import torch
from torch import nn

from pockettts.modules.mlp import SimpleMLPAdaLN

Terms = dict[str, torch.Tensor]


class GenerationHead(nn.Module):
    """Base class: shape checks, valid-row selection and the batch multiplier; subclasses implement
    ``objective`` (per-row losses) and ``decode`` (noise -> latent).

    Args:
        latent_dim: ``D``, the latent size (32 for the released codec).
        cond_dim: ``C``, the backbone width (1024).
        dim: width of the head's MLP (512).
        depth: residual blocks of the head's MLP (6).
        batch_multiplier: each valid ``(z, x1)`` row is used this many times per loss call, each with its
            own noise and times (4 in Kyutai's open recipe, 8 in the paper).
    """

    num_time_conds: int = 2
    default_sample_steps: int = 1

    def __init__(
        self,
        latent_dim: int = 32,
        cond_dim: int = 1024,
        dim: int = 512,
        depth: int = 6,
        batch_multiplier: int = 1,
    ):
        super().__init__()
        if batch_multiplier < 1:
            raise ValueError(f"batch_multiplier must be >= 1, got {batch_multiplier}")
        self.latent_dim = latent_dim
        self.cond_dim = cond_dim
        self.batch_multiplier = batch_multiplier
        self.flow_net = SimpleMLPAdaLN(latent_dim, dim, latent_dim, cond_dim, depth, self.num_time_conds)

    # ------------------------------------------------------------------ interface
    def loss(
        self, z: torch.Tensor, x1: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, Terms]:
        """``z [N, C]``, ``x1 [N, D]``, ``mask [N]`` bool (True = row counts) -> (scalar loss, terms).

        Leading dims beyond one (``[B, T, ...]`` with ``mask [B, T]``) are flattened. The loss is the mean
        of the per-row objective over ``n_valid · batch_multiplier`` rows (0 when no row is valid).
        """
        lead = z.shape[:-1]
        z, x1 = self._check_rows(z, x1, "x1")
        if mask is not None:
            if mask.dtype != torch.bool:
                raise ValueError(f"mask must be a bool tensor, got dtype {mask.dtype}")
            if mask.shape != lead:
                raise ValueError(f"mask must have z's leading shape {tuple(lead)}, got {tuple(mask.shape)}")
            mask = mask.reshape(-1)
            z, x1 = z[mask], x1[mask]
        k = self.batch_multiplier
        z, x1 = z.repeat(k, 1), x1.repeat(k, 1)
        per_row, terms = self.objective(z, x1, torch.randn_like(x1))
        loss = per_row.sum() / max(per_row.shape[0], 1)
        return loss, {name: value.detach() for name, value in terms.items()}

    @torch.no_grad()
    def sample(self, z: torch.Tensor, noise: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        """``z [N, C]`` and ``noise [N, D]`` (already temperature-scaled) -> latent ``[N, D]``.

        ``steps`` network evaluations; None means the head's ``default_sample_steps``."""
        lead = noise.shape[:-1]
        z, noise, steps = self._check_sample_args(z, noise, steps)
        return self.decode(z, noise, steps).reshape(*lead, self.latent_dim)

    def objective(self, z: torch.Tensor, x1: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, Terms]:
        """Per-row loss ``[M]`` and logging terms for ``z [M, C]``, ``x1 [M, D]``, ``noise [M, D]``.

        ``loss`` passes ``M = k·N`` rows (``k = batch_multiplier``, ``N`` valid rows): rows ``i, i + N, …,
        i + (k − 1)·N`` are copies of one ``(z, x1)`` with their own noise."""
        raise NotImplementedError

    def decode(self, z: torch.Tensor, noise: torch.Tensor, steps: int) -> torch.Tensor:
        """``z [N, C]``, ``noise [N, D]`` -> ``[N, D]`` in ``steps`` network evaluations."""
        raise NotImplementedError

    # ------------------------------------------------------------------ helpers
    def _check_sample_args(
        self, z: torch.Tensor, noise: torch.Tensor, steps: int | None
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        steps = self.default_sample_steps if steps is None else steps
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive int, got {steps!r}")
        z, noise = self._check_rows(z, noise, "noise")
        return z, noise, steps

    def _check_rows(self, z: torch.Tensor, x: torch.Tensor, x_name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Flatten ``z [..., C]`` and ``x [..., D]`` to rows, checking widths and matching leading dims."""
        if z.dim() < 2 or z.shape[-1] != self.cond_dim:
            raise ValueError(f"z must be [N, {self.cond_dim}], got {tuple(z.shape)}")
        if x.dim() < 2 or x.shape[-1] != self.latent_dim:
            raise ValueError(f"{x_name} must be [N, {self.latent_dim}], got {tuple(x.shape)}")
        if z.shape[:-1] != x.shape[:-1]:
            raise ValueError(
                f"z {tuple(z.shape)} and {x_name} {tuple(x.shape)} must have the same leading dims"
            )
        return z.reshape(-1, self.cond_dim), x.reshape(-1, self.latent_dim)
