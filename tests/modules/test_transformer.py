"""Projected (``attn_dim``) and grouped-query (``num_kv_heads``) attention, the 2026-10 small models'
attention: a stream equals the full pass and is causal, the cache holds only the key/value heads,
grouping means sharing (it equals plain attention whose key/value heads are repeated), padding and
windows behave as with plain attention, and the packed projection is Pocket TTS's."""

from __future__ import annotations

import pytest
import torch

from pockettts.modules.transformer import StreamingMultiheadAttention, StreamingTransformer
from tests.support import assert_causal, run_streamed

D_MODEL, HEADS = 16, 4
# (attn_dim, num_kv_heads): projected only, grouped only, both, multi-query.
VARIANTS = [(24, None), (None, 2), (8, 2), (24, 1)]


def _transformer(attn_dim, num_kv_heads, context=None, num_layers=2, layer_scale=0.5) -> StreamingTransformer:
    torch.manual_seed(0)
    return StreamingTransformer(
        D_MODEL, HEADS, num_layers, 32, context=context, layer_scale=layer_scale,
        attn_dim=attn_dim, num_kv_heads=num_kv_heads,
    ).eval()  # fmt: skip


@pytest.mark.parametrize("context", [None, 5])
@pytest.mark.parametrize("attn_dim, num_kv_heads", VARIANTS)
def test_stream_equals_the_full_pass_and_is_causal(attn_dim, num_kv_heads, context):
    transformer = _transformer(attn_dim, num_kv_heads, context)
    x = torch.randn(2, 30, D_MODEL)
    full = transformer(x)
    for seed in range(2):
        torch.testing.assert_close(run_streamed(transformer, x, max_chunk=6, seed=seed, time_dim=1), full)
    assert_causal(transformer, x, cut=13, out_per_in=1.0, time_dim=1)


@pytest.mark.parametrize("attn_dim, num_kv_heads", VARIANTS)
def test_projections_and_cache_have_the_narrow_shapes(attn_dim, num_kv_heads):
    transformer = _transformer(attn_dim, num_kv_heads, num_layers=1)
    attention = transformer.layers[0].self_attn
    width, kv_heads = attn_dim or D_MODEL, num_kv_heads or HEADS
    head_dim = width // HEADS
    assert attention.in_proj.weight.shape == (width + 2 * kv_heads * head_dim, D_MODEL)
    assert attention.out_proj.weight.shape == (D_MODEL, width)
    state = transformer.init_state(3)
    transformer(torch.randn(3, 7, D_MODEL), state)
    keys, values = state["layers.0"]["self_attn"]["keys"], state["layers.0"]["self_attn"]["values"]
    assert keys.shape[:2] == values.shape[:2] == (3, kv_heads) and keys.shape[3] == head_dim


def test_grouped_query_attention_is_attention_with_shared_key_value_heads():
    """Query head i reads key/value head i // (num_heads // num_kv_heads): a grouped layer equals a
    plain one whose key and value projections repeat each group's head."""
    grouped = StreamingMultiheadAttention(D_MODEL, HEADS, attn_dim=24, num_kv_heads=2).eval()
    plain = StreamingMultiheadAttention(D_MODEL, HEADS, attn_dim=24).eval()
    head_dim = 24 // HEADS
    q, k, v = grouped.in_proj.weight.split([24, 2 * head_dim, 2 * head_dim])
    repeat = lambda w: w.view(2, head_dim, D_MODEL).repeat_interleave(2, dim=0).reshape(-1, D_MODEL)  # noqa: E731
    with torch.no_grad():
        plain.in_proj.weight.copy_(torch.cat([q, repeat(k), repeat(v)]))
        plain.out_proj.weight.copy_(grouped.out_proj.weight)
    x = torch.randn(2, 9, D_MODEL)
    torch.testing.assert_close(grouped(x), plain(x))
    weights = grouped.attention_weights(x)
    torch.testing.assert_close(weights, plain.attention_weights(x))
    _, _, values = plain._heads(x, 0)
    mixed = (weights @ values).transpose(1, 2).reshape(2, 9, 24)
    torch.testing.assert_close(grouped.out_proj(mixed), grouped(x))


def test_window_bounds_the_grouped_cache():
    transformer = _transformer(8, 1, context=4, num_layers=1)
    x = torch.randn(1, 20, D_MODEL)
    state = transformer.init_state(1)
    streamed = torch.cat([transformer(x[:, i : i + 1], state) for i in range(20)], dim=1)
    torch.testing.assert_close(streamed, transformer(x))
    for _ in range(100):
        transformer(torch.randn(1, 1, D_MODEL), state)
    assert state["layers.0"]["self_attn"]["keys"].shape[1:3] == (1, 16)


def test_left_padded_grouped_streams_equal_each_stream_alone():
    transformer = _transformer(24, 2)
    prefixes = [torch.randn(6, D_MODEL), torch.randn(2, D_MODEL)]
    steps = torch.randn(2, 4, D_MODEL)
    batch = torch.zeros(2, 6, D_MODEL)
    valid = torch.zeros(2, 6, dtype=torch.bool)
    for row, prefix in enumerate(prefixes):
        batch[row, 6 - len(prefix) :], valid[row, 6 - len(prefix) :] = prefix, True
    state = transformer.init_state(2)
    transformer(batch, state, valid)
    batched = torch.cat([transformer(steps[:, i : i + 1], state) for i in range(4)], dim=1)
    for row, prefix in enumerate(prefixes):
        alone = transformer.init_state(1)
        transformer(prefix[None], alone)
        expected = torch.cat([transformer(steps[row : row + 1, i : i + 1], alone) for i in range(4)], 1)
        torch.testing.assert_close(batched[row : row + 1], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(attn_dim=18), "attn_dim 18 is not a multiple of num_heads 4"),
        (dict(num_kv_heads=3), "num_heads 4 is not a multiple of num_kv_heads 3"),
        (dict(num_kv_heads=0), "must be positive"),
        (dict(attn_dim=-8), "must be positive"),
    ],
)
def test_bad_sizes_are_refused_by_name(kwargs, message):
    with pytest.raises(ValueError, match=message):
        StreamingMultiheadAttention(D_MODEL, HEADS, **kwargs)


@pytest.mark.parametrize("attn_dim, num_kv_heads", [(24, 2), (8, 1)])
def test_same_as_the_pocket_tts_transformer(attn_dim, num_kv_heads):
    """The package's transformer with these options, its weights loaded into ours: the same output
    (its packing of queries, keys and values in ``in_proj`` is ours)."""
    pytest.importorskip("pocket_tts", reason="parity needs the pocket-tts test dependency")
    from pocket_tts.modules.transformer import StreamingTransformer as PocketTransformer

    torch.manual_seed(1)
    reference = PocketTransformer(
        D_MODEL, HEADS, 2, dim_feedforward=32, attn_dim=attn_dim, num_kv_heads=num_kv_heads
    ).eval()
    ours = _transformer(attn_dim, num_kv_heads, layer_scale=None)
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(2, 11, D_MODEL)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x, None), atol=1e-5, rtol=1e-5)
