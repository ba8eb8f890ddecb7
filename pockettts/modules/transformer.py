"""Causal pre-norm transformer with RoPE, an optional local attention window and a KV cache.

One module serves the codec (2 layers at 200 Hz, a 250-frame window) and the TTS backbone (6 or 24
layers, unbounded causal context). Parameter names follow the released Pocket TTS models
(``layers.N.self_attn.in_proj.weight``, ``layers.N.linear1.weight``, ...). A full pass
(``state=None``) and any split into chunks give the same output; a stream keeps the keys and
values of the past (only the last ``context - 1`` when the window is bounded).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pockettts.modules.rope import apply_rope
from pockettts.modules.streaming import State, StreamingModule, child_state


def local_causal_mask(n_queries: int, n_keys: int, context: int | None, device: torch.device) -> torch.Tensor:
    """Boolean ``[n_queries, n_keys]``: the queries are the last ``n_queries`` of the keys' positions;
    a query sees a key when ``0 <= q_pos - k_pos < context``."""
    query_positions = torch.arange(n_keys - n_queries, n_keys, device=device)[:, None]
    delta = query_positions - torch.arange(n_keys, device=device)[None, :]
    mask = delta >= 0
    if context is not None:
        mask &= delta < context
    return mask


class LayerScale(nn.Module):
    """Per-channel learnt scale of a residual branch, initialised small (``init``)."""

    def __init__(self, channels: int, init: float):
        super().__init__()
        self.scale = nn.Parameter(torch.full((channels,), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x


class StreamingMultiheadAttention(StreamingModule):
    """Causal self-attention with RoPE; bias-free packed ``in_proj`` (q, k, v) and ``out_proj``."""

    def __init__(
        self, d_model: int, num_heads: int, context: int | None = None, max_period: float = 10_000.0
    ):
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model {d_model} is not a multiple of num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.context = context
        self.max_period = max_period
        self.in_proj = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out_proj = nn.Linear(d_model, d_model, bias=False)

    def init_own_state(self, batch_size: int, device: torch.device) -> State:
        empty = torch.zeros(batch_size, self.num_heads, 0, self.head_dim, device=device)
        return {
            "keys": empty,
            "values": empty.clone(),
            "offset": torch.zeros((), dtype=torch.long, device=device),
        }

    def forward(self, x: torch.Tensor, state: State | None = None) -> torch.Tensor:
        """``[B, T, D]`` -> ``[B, T, D]``; with a state, ``x`` continues the stream at its offset."""
        batch, length, _ = x.shape
        q, k, v = self.in_proj(x).view(batch, length, 3, self.num_heads, self.head_dim).unbind(dim=2)
        offset = 0 if state is None else int(state["offset"])
        q = apply_rope(q, offset, self.max_period).transpose(1, 2)  # [B, H, T, Dh]
        k = apply_rope(k, offset, self.max_period).transpose(1, 2)
        v = v.transpose(1, 2)
        if state is not None:
            k = torch.cat([state["keys"].to(k.dtype), k], dim=2)
            v = torch.cat([state["values"].to(v.dtype), v], dim=2)
            keep = k.shape[2] if self.context is None else min(k.shape[2], self.context - 1)
            state["keys"], state["values"] = k[:, :, k.shape[2] - keep :], v[:, :, v.shape[2] - keep :]
            state["offset"] = state["offset"] + length
        if state is None and self.context is None:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            mask = local_causal_mask(length, k.shape[2], self.context, x.device)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, -1))


class StreamingTransformerLayer(StreamingModule):
    """Pre-LayerNorm block: ``x + ls1(attn(norm1(x)))``, then ``x + ls2(ffn(norm2(x)))`` (tanh GELU)."""

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        dim_feedforward: int,
        context: int | None = None,
        max_period: float = 10_000.0,
        layer_scale: float | None = None,
    ):
        super().__init__()
        self.self_attn = StreamingMultiheadAttention(d_model, num_heads, context, max_period)
        self.norm1 = nn.LayerNorm(d_model, eps=1e-5)
        self.norm2 = nn.LayerNorm(d_model, eps=1e-5)
        self.linear1 = nn.Linear(d_model, dim_feedforward, bias=False)
        self.linear2 = nn.Linear(dim_feedforward, d_model, bias=False)
        self.layer_scale_1 = nn.Identity() if layer_scale is None else LayerScale(d_model, layer_scale)
        self.layer_scale_2 = nn.Identity() if layer_scale is None else LayerScale(d_model, layer_scale)

    def forward(self, x: torch.Tensor, state: State | None = None) -> torch.Tensor:
        x = x + self.layer_scale_1(self.self_attn(self.norm1(x), child_state(state, "self_attn")))
        update = self.linear2(F.gelu(self.linear1(self.norm2(x)), approximate="tanh"))
        return x + self.layer_scale_2(update)


class StreamingTransformer(StreamingModule):
    """A stack of ``StreamingTransformerLayer``: ``[B, T, D]`` -> ``[B, T, D]``."""

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        num_layers: int,
        dim_feedforward: int,
        context: int | None = None,
        max_period: float = 10_000.0,
        layer_scale: float | None = None,
    ):
        super().__init__()
        self.layers = nn.ModuleList(
            StreamingTransformerLayer(d_model, num_heads, dim_feedforward, context, max_period, layer_scale)
            for _ in range(num_layers)
        )

    def forward(self, x: torch.Tensor, state: State | None = None) -> torch.Tensor:
        for index, layer in enumerate(self.layers):
            x = layer(x, child_state(state, f"layers.{index}"))
        return x


class ProjectedTransformer(StreamingModule):
    """A transformer over conv-layout features: ``[B, C_in, T]`` -> ``[B, C_out, T]``, with bias-free
    input/output projections only where the widths differ from ``d_model``."""

    def __init__(
        self,
        input_dimension: int,
        output_dimension: int,
        d_model: int,
        num_heads: int,
        num_layers: int,
        dim_feedforward: int,
        context: int | None = None,
        max_period: float = 10_000.0,
        layer_scale: float | None = None,
    ):
        super().__init__()
        self.transformer = StreamingTransformer(
            d_model, num_heads, num_layers, dim_feedforward, context, max_period, layer_scale
        )
        self.input_proj = (
            None if input_dimension == d_model else nn.Linear(input_dimension, d_model, bias=False)
        )
        self.output_proj = (
            None if output_dimension == d_model else nn.Linear(d_model, output_dimension, bias=False)
        )

    def forward(self, x: torch.Tensor, state: State | None = None) -> torch.Tensor:
        x = x.transpose(1, 2)
        if self.input_proj is not None:
            x = self.input_proj(x)
        x = self.transformer(x, child_state(state, "transformer"))
        if self.output_proj is not None:
            x = self.output_proj(x)
        return x.transpose(1, 2)
