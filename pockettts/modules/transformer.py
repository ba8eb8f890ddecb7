"""Causal pre-norm transformer with RoPE, an optional local attention window and a KV cache.

One module serves the codec (2 layers at 200 Hz, a 250-frame window) and the TTS backbone (6 or 24
layers, unbounded causal context). Parameter names follow the released Pocket TTS models
(``layers.N.self_attn.in_proj.weight``, ``layers.N.linear1.weight``, ...). A full pass
(``state=None``) and any split into chunks give the same output; a stream keeps the keys and
values of the past (only the last ``context - 1`` when the window is bounded).

The small Pocket TTS models (2026-10) narrow the attention two ways, both optional here:
``attn_dim`` sets the width of the queries and of the attention output independently of
``d_model`` (projected attention), and ``num_kv_heads < num_heads`` shares each key/value head
between ``num_heads // num_kv_heads`` query heads (grouped-query attention). A stream then caches
only the ``num_kv_heads`` key/value heads, which is what makes a step cheaper.
"""

from __future__ import annotations

import functools

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


# The longest chunk whose mask is cached: a stream's steps (one query in the backbone, 16 per frame in
# the codec's decoder at 200 Hz, a few frames' worth when it decodes several at once).
CACHED_MASK_QUERIES = 128


@functools.lru_cache(maxsize=256)
def _stream_mask(n_queries: int, n_keys: int, context: int | None, device: torch.device) -> torch.Tensor:
    """``local_causal_mask``, built once per shape: a windowed stream asks for the same few at every
    step. Built outside inference mode, so that training may use it too."""
    with torch.inference_mode(False), torch.no_grad():
        return local_causal_mask(n_queries, n_keys, context, device)


class LayerScale(nn.Module):
    """Per-channel learnt scale of a residual branch, initialised small (``init``)."""

    def __init__(self, channels: int, init: float):
        super().__init__()
        self.scale = nn.Parameter(torch.full((channels,), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x


class StreamingMultiheadAttention(StreamingModule):
    """Causal self-attention with RoPE; bias-free packed ``in_proj`` and ``out_proj``.

    ``in_proj`` maps ``d_model`` to ``attn_dim + 2 * kv_dim`` channels: the queries (``num_heads`` heads of
    ``head_dim = attn_dim // num_heads``), then keys and values (``num_kv_heads`` heads each,
    ``kv_dim = num_kv_heads * head_dim``) in Pocket TTS's packing; ``out_proj`` maps ``attn_dim`` back to
    ``d_model``. With the defaults (``attn_dim = d_model``, ``num_kv_heads = num_heads``) this is plain
    multi-head attention with a ``3 * d_model`` packed projection.

    A stream keeps its keys (already rotated) and values in buffers that grow by doubling, so a step
    writes in place instead of re-concatenating the whole past; with a bounded window the buffer is
    compacted to the last ``context - 1`` positions when it fills. ``valid`` marks real positions:
    a batch of streams whose prefixes differ in length is left-padded with invalid slots (RoPE
    only sees position differences, so a row's padding does not change its result).
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        context: int | None = None,
        max_period: float = 10_000.0,
        attn_dim: int | None = None,
        num_kv_heads: int | None = None,
    ):
        super().__init__()
        attn_dim = d_model if attn_dim is None else attn_dim
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        if min(d_model, num_heads, attn_dim, num_kv_heads) <= 0:
            raise ValueError(
                f"attention sizes must be positive: d_model {d_model}, num_heads {num_heads}, "
                f"attn_dim {attn_dim}, num_kv_heads {num_kv_heads}"
            )
        if attn_dim % num_heads:
            raise ValueError(f"attn_dim {attn_dim} is not a multiple of num_heads {num_heads}")
        if num_heads % num_kv_heads:
            raise ValueError(f"num_heads {num_heads} is not a multiple of num_kv_heads {num_kv_heads}")
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.attn_dim = attn_dim
        self.head_dim = attn_dim // num_heads
        self.context = context
        self.max_period = max_period
        self.in_proj = nn.Linear(d_model, attn_dim + 2 * num_kv_heads * self.head_dim, bias=False)
        self.out_proj = nn.Linear(attn_dim, d_model, bias=False)

    @property
    def grouped(self) -> bool:
        """Whether key/value heads are shared between query heads (grouped-query attention)."""
        return self.num_kv_heads != self.num_heads

    def init_own_state(self, batch_size: int, device: torch.device) -> State:
        empty = torch.zeros(batch_size, self.num_kv_heads, 0, self.head_dim, device=device)
        return {
            "keys": empty,  # [B, H_kv, capacity, Dh]; slots [0, length) are filled
            "values": empty.clone(),
            "valid": torch.zeros(batch_size, 0, dtype=torch.bool, device=device),  # [B, capacity]
            "length": torch.zeros((), dtype=torch.long, device=device),
            "offset": torch.zeros((), dtype=torch.long, device=device),  # stream position (RoPE)
        }

    def _reserve(self, state: State, new: int, like: torch.Tensor) -> int:
        """Make room for ``new`` slots after the filled ones; returns where they start."""
        length, capacity = int(state["length"]), state["keys"].shape[2]
        if length + new > capacity and self.context is not None and length > self.context - 1:
            keep = self.context - 1  # older keys are outside every future query's window
            for name in ("keys", "values"):
                state[name][:, :, :keep] = state[name][:, :, length - keep : length].clone()
            state["valid"][:, :keep] = state["valid"][:, length - keep : length].clone()
            length = keep
        if length + new > capacity or state["keys"].dtype != like.dtype:
            grown = max(length + new, 2 * capacity, 16)
            batch = like.shape[0]
            keys = like.new_zeros(batch, self.num_kv_heads, grown, self.head_dim)
            values = like.new_zeros(batch, self.num_kv_heads, grown, self.head_dim)
            valid = torch.zeros(batch, grown, dtype=torch.bool, device=like.device)
            keys[:, :, :length] = state["keys"][:, :, :length]
            values[:, :, :length] = state["values"][:, :, :length]
            valid[:, :length] = state["valid"][:, :length]
            state["keys"], state["values"], state["valid"] = keys, values, valid
        return length

    def forward(
        self, x: torch.Tensor, state: State | None = None, valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``[B, T, D]`` -> ``[B, T, D]``; with a state, ``x`` continues the stream at its offset.

        ``valid`` ``[B, T]`` (streaming only) marks padding in ``x`` that no later query may see.
        """
        batch, length, _ = x.shape
        q, k, v = self._heads(x, 0 if state is None else int(state["offset"]))
        if state is None:
            if self.context is None:
                out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=self.grouped)
            else:
                mask = local_causal_mask(length, length, self.context, x.device)
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=self.grouped)
            return self.out_proj(out.transpose(1, 2).reshape(batch, length, -1))
        start = self._reserve(state, length, k)
        end = start + length
        state["keys"][:, :, start:end] = k
        state["values"][:, :, start:end] = v
        state["valid"][:, start:end] = True if valid is None else valid
        state["length"] = state["length"].new_tensor(end)
        state["offset"] = state["offset"] + length
        keys, values, seen = state["keys"][:, :, :end], state["values"][:, :, :end], state["valid"][:, :end]
        windowed = self.context is not None and end > self.context
        padded = not bool(seen.all())
        if length == 1 and not windowed and not padded:
            # one query sees every key
            out = F.scaled_dot_product_attention(q, keys, values, enable_gqa=self.grouped)
        else:
            mask = (
                _stream_mask(length, end, self.context, x.device)
                if length <= CACHED_MASK_QUERIES
                else local_causal_mask(length, end, self.context, x.device)
            )
            if padded:
                # A padded query still sees itself, so no softmax row is empty (NaNs would leak on).
                own = torch.zeros(length, end, dtype=torch.bool, device=x.device)
                own[:, start:] = torch.eye(length, dtype=torch.bool, device=x.device)
                mask = mask & (seen[:, None, None, :] | own)
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, enable_gqa=self.grouped)
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, -1))

    def _heads(self, x: torch.Tensor, offset: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``[B, T, D]`` at stream position ``offset`` -> rotated q ``[B, H, T, Dh]``, rotated k and v
        ``[B, H_kv, T, Dh]``."""
        batch, length, _ = x.shape
        packed = self.in_proj(x)
        q = packed[..., : self.attn_dim].view(batch, length, self.num_heads, self.head_dim)
        # Pocket TTS packs keys and values as [2, H_kv, Dh] after the queries.
        kv = packed[..., self.attn_dim :].view(batch, length, 2, self.num_kv_heads, self.head_dim)
        k, v = kv.unbind(dim=2)
        # one rotation for queries and keys (per head, so the same as two)
        rotated = apply_rope(torch.cat([q, k], dim=2), offset, self.max_period)
        q, k = rotated.split([self.num_heads, self.num_kv_heads], dim=2)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

    def attention_weights(self, x: torch.Tensor) -> torch.Tensor:
        """The attention of a full pass over ``x`` ``[B, T, D]`` (what ``forward`` averages values with,
        which uses a fused kernel instead): ``[B, H, T, T]``, rows summing to 1. For diagnostics."""
        q, k, _ = self._heads(x, 0)
        # grouped-query attention: query head i reads key head i // (num_heads // num_kv_heads)
        k = k.repeat_interleave(self.num_heads // self.num_kv_heads, dim=1)
        scores = q @ k.transpose(-1, -2) / self.head_dim**0.5
        mask = local_causal_mask(x.shape[1], x.shape[1], self.context, x.device)
        return scores.masked_fill(~mask, float("-inf")).softmax(dim=-1)


class StreamingTransformerLayer(StreamingModule):
    """Pre-LayerNorm block: ``x + ls1(attn(norm1(x)))``, then ``x + ls2(ffn(norm2(x)))`` (tanh GELU).
    ``attn_dim`` and ``num_kv_heads``: see ``StreamingMultiheadAttention``."""

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        dim_feedforward: int,
        context: int | None = None,
        max_period: float = 10_000.0,
        layer_scale: float | None = None,
        attn_dim: int | None = None,
        num_kv_heads: int | None = None,
    ):
        super().__init__()
        self.self_attn = StreamingMultiheadAttention(
            d_model, num_heads, context, max_period, attn_dim=attn_dim, num_kv_heads=num_kv_heads
        )
        self.norm1 = nn.LayerNorm(d_model, eps=1e-5)
        self.norm2 = nn.LayerNorm(d_model, eps=1e-5)
        self.linear1 = nn.Linear(d_model, dim_feedforward, bias=False)
        self.linear2 = nn.Linear(dim_feedforward, d_model, bias=False)
        self.layer_scale_1 = nn.Identity() if layer_scale is None else LayerScale(d_model, layer_scale)
        self.layer_scale_2 = nn.Identity() if layer_scale is None else LayerScale(d_model, layer_scale)

    def forward(
        self, x: torch.Tensor, state: State | None = None, valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        attended = self.self_attn(self.norm1(x), child_state(state, "self_attn"), valid)
        x = x + self.layer_scale_1(attended)
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
        attn_dim: int | None = None,
        num_kv_heads: int | None = None,
    ):
        super().__init__()
        self.layers = nn.ModuleList(
            StreamingTransformerLayer(
                d_model, num_heads, dim_feedforward, context, max_period, layer_scale, attn_dim, num_kv_heads
            )
            for _ in range(num_layers)
        )

    def forward(
        self, x: torch.Tensor, state: State | None = None, valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``valid`` ``[B, T]``: see ``StreamingMultiheadAttention.forward``."""
        for index, layer in enumerate(self.layers):
            x = layer(x, child_state(state, f"layers.{index}"), valid)
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
