"""The AdaLN MLP generation head network (MAR's diffusion-loss MLP, arXiv 2406.11838).

``SimpleMLPAdaLN`` maps a backbone vector ``c``, zero or more times and a latent ``x`` to a latent-shaped
output (a velocity for flow heads, ``F`` for the consistency head). Parameter names and shapes follow
the released Pocket TTS head (``flow_net.*``: ``time_embed.N``, ``cond_embed``, ``input_proj``,
``res_blocks.N``, ``final_layer``), so its weights load here with ``strict=True`` and ours load there.

The norms are written out by hand (no ``F.layer_norm``) so that forward-mode autodiff (``torch.func.jvp``,
used by the LSD and consistency objectives) and a backward pass through it work on every backend.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """AdaLN: ``x·(1 + scale) + shift``; zero modulation is the identity."""
    return x * (1 + scale) + shift


class LayerNorm(nn.Module):
    """Layer norm over the last dim (biased variance), optional affine; jvp-friendly."""

    def __init__(self, channels: int, eps: float = 1e-6, elementwise_affine: bool = True):
        super().__init__()
        self.eps = eps
        if elementwise_affine:
            self.weight = nn.Parameter(torch.ones(channels))
            self.bias = nn.Parameter(torch.zeros(channels))
        else:  # the final layer's norm has no parameters (no checkpoint keys either)
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled() and x.device.type == "cpu":
            # inference: one fused op instead of six (the head runs once per frame; its cost there
            # is the number of ops); its forward-mode derivative is defined on the CPU as well
            return F.layer_norm(x, x.shape[-1:], self.weight, self.bias, self.eps)
        centred = x - x.mean(dim=-1, keepdim=True)
        var = centred.square().mean(dim=-1, keepdim=True)
        x = centred / torch.sqrt(var + self.eps)
        if self.weight is not None:
            x = x * self.weight + self.bias
        return x


class RMSNorm(nn.Module):
    """The released head's "RMSNorm": ``x · alpha / sqrt(eps + var(x))``.

    Note it divides by the unbiased *variance* of ``x`` (mean removed), not by the mean square, and does
    not centre ``x``; kept as is because released weights were trained with it. Computed in the
    precision of ``alpha`` (float32 under autocast) and returned in ``x``'s dtype.
    """

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.alpha = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # unbiased variance written out: ``Tensor.var`` warns on a batch of zero rows
        centred = x - x.mean(dim=-1, keepdim=True)
        var = self.eps + centred.square().sum(dim=-1, keepdim=True) / (x.shape[-1] - 1)
        return (x * (self.alpha.to(var) * torch.rsqrt(var))).to(x.dtype)


class TimestepEmbedder(nn.Module):
    """Scalar time ``[N, 1]`` -> ``[N, hidden]``: sin/cos features of the raw time, an MLP, RMSNorm.

    Frequencies run from 1 down to ``1/max_period`` (geometric), applied to ``t`` as given (no x1000
    scaling), which suits times in ``[0, 1]`` or ``[0, π/2]``.
    """

    freqs: torch.Tensor

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256, max_period: float = 10_000.0):
        super().__init__()
        if frequency_embedding_size % 2:
            raise ValueError(f"frequency_embedding_size must be even, got {frequency_embedding_size}")
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size),
            RMSNorm(hidden_size),
        )
        half = frequency_embedding_size // 2
        # a persistent buffer: the released checkpoints carry ``time_embed.N.freqs``
        self.register_buffer("freqs", torch.exp(-math.log(max_period) * torch.arange(half) / half))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        angles = t * self.freqs.to(t.dtype)
        return self.mlp(torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1))


class ResBlock(nn.Module):
    """``x + gate · MLP(modulate(LN(x), shift, scale))`` with (shift, scale, gate) from the condition."""

    def __init__(self, channels: int):
        super().__init__()
        self.in_ln = LayerNorm(channels, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(channels, channels), nn.SiLU(), nn.Linear(channels, channels))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(channels, 3 * channels))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.adaLN_modulation(y).chunk(3, dim=-1)
        return x + gate * self.mlp(modulate(self.in_ln(x), shift, scale))


class FinalLayer(nn.Module):
    """DiT's output layer: non-affine LN, AdaLN shift/scale from the condition, linear projection."""

    def __init__(self, model_channels: int, out_channels: int):
        super().__init__()
        self.norm_final = LayerNorm(model_channels, eps=1e-6, elementwise_affine=False)
        self.linear = nn.Linear(model_channels, out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(model_channels, 2 * model_channels))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(y).chunk(2, dim=-1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class SimpleMLPAdaLN(nn.Module):
    """AdaLN residual MLP ``(c [N, cond], t_1 [N, 1], ..., t_k [N, 1], x [N, in]) -> [N, out]``.

    The condition vector is ``cond_embed(c)`` plus the *mean* of the ``k = num_time_conds`` time
    embeddings (one embedder per time: LSD passes ``(s, t)``, flow matching ``t``). Defaults are the
    released Pocket TTS head (32 / 512 / 32 / 1024, 6 blocks, 2 times).
    """

    def __init__(
        self,
        in_channels: int = 32,
        model_channels: int = 512,
        out_channels: int = 32,
        cond_channels: int = 1024,
        num_res_blocks: int = 6,
        num_time_conds: int = 2,
    ):
        super().__init__()
        if num_time_conds < 0:
            raise ValueError(f"num_time_conds must be >= 0, got {num_time_conds}")
        self.in_channels = in_channels
        self.model_channels = model_channels
        self.out_channels = out_channels
        self.cond_channels = cond_channels
        self.num_res_blocks = num_res_blocks
        self.num_time_conds = num_time_conds

        self.time_embed = nn.ModuleList([TimestepEmbedder(model_channels) for _ in range(num_time_conds)])
        self.cond_embed = nn.Linear(cond_channels, model_channels)
        self.input_proj = nn.Linear(in_channels, model_channels)
        self.res_blocks = nn.ModuleList([ResBlock(model_channels) for _ in range(num_res_blocks)])
        self.final_layer = FinalLayer(model_channels, out_channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """DiT/MAR init: xavier-uniform linears with zero bias, time MLPs N(0, 0.02), and zero adaLN
        modulations and output projection, so a fresh head outputs exactly zero."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        for embedder in self.time_embed:
            nn.init.normal_(embedder.mlp[0].weight, std=0.02)
            nn.init.normal_(embedder.mlp[2].weight, std=0.02)
        zero_linears = [block.adaLN_modulation[-1] for block in self.res_blocks]
        zero_linears += [self.final_layer.adaLN_modulation[-1], self.final_layer.linear]
        for linear in zero_linears:
            nn.init.zeros_(linear.weight)
            nn.init.zeros_(linear.bias)

    def forward(self, c: torch.Tensor, *times_and_x: torch.Tensor) -> torch.Tensor:
        """``forward(c, t_1, ..., t_k, x)``: ``c`` [N, cond], each time [N, 1], ``x`` [N, in] -> [N, out]."""
        if len(times_and_x) != self.num_time_conds + 1:
            raise ValueError(
                f"SimpleMLPAdaLN expects {self.num_time_conds} time tensor(s) then x, "
                f"got {len(times_and_x)} tensor(s) after c"
            )
        *times, x = times_and_x
        if c.shape[-1] != self.cond_channels or x.shape[-1] != self.in_channels:
            raise ValueError(
                f"SimpleMLPAdaLN expects c [..., {self.cond_channels}] and x [..., {self.in_channels}], "
                f"got c {tuple(c.shape)} and x {tuple(x.shape)}"
            )
        for time in times:
            if time.shape[-1] != 1:
                raise ValueError(f"time tensors must be [..., 1], got {tuple(time.shape)}")
        y = self.cond_embed(c)
        if times:
            y = y + sum(embed(time) for embed, time in zip(self.time_embed, times)) / len(times)
        h = self.input_proj(x)
        for block in self.res_blocks:
            h = block(h, y)
        return self.final_layer(h, y)
