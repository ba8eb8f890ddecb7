"""The two properties of every causal module: new input never changes past output, and feeding
the input chunk by chunk (random chunk sizes) gives exactly the full-sequence output."""

from __future__ import annotations

import pytest
import torch

from pockettts.modules.conv import StreamingConv1d, StreamingConvTranspose1d, folded_state_dict
from pockettts.modules.rope import apply_rope
from pockettts.modules.seanet import SEANetDecoder, SEANetEncoder
from pockettts.modules.streaming import flatten_state, unflatten_state
from pockettts.modules.transformer import ProjectedTransformer, StreamingTransformer
from tests.support import assert_causal, run_streamed

CONV_CASES = [
    dict(kernel_size=7),
    dict(kernel_size=3, dilation=4),
    dict(kernel_size=8, stride=4),
    dict(kernel_size=32, stride=16, bias=False, pad_mode="replicate"),
    dict(kernel_size=1, weight_norm=True),
    dict(kernel_size=12, stride=6, weight_norm=True),
]


@pytest.mark.parametrize("kwargs", CONV_CASES)
def test_conv1d_streams_exactly_and_is_causal(kwargs):
    torch.manual_seed(0)
    conv = StreamingConv1d(3, 5, **kwargs)
    x = torch.randn(2, 3, 16 * 20)
    full = conv(x)
    assert full.shape[-1] == x.shape[-1] // conv.stride
    for seed in range(3):
        torch.testing.assert_close(run_streamed(conv, x, max_chunk=37, seed=seed), full)
    assert_causal(conv, x, cut=160, out_per_in=1 / conv.stride)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(kernel_size=8, stride=4),
        dict(kernel_size=4, stride=4),
        dict(kernel_size=32, stride=16, groups=5, bias=False),
    ],
)
def test_conv_transpose_streams_exactly_and_is_causal(kwargs):
    torch.manual_seed(0)
    convtr = StreamingConvTranspose1d(5, 5, **kwargs)
    x = torch.randn(2, 5, 30)
    full = convtr(x)
    assert full.shape[-1] == 30 * convtr.stride
    torch.testing.assert_close(run_streamed(convtr, x, max_chunk=4), full)
    assert_causal(convtr, x, cut=11, out_per_in=convtr.stride)


def test_conv_rejects_unknown_pad_mode():
    with pytest.raises(ValueError, match="pad_mode"):
        StreamingConv1d(1, 1, 3, pad_mode="reflect")


def test_folded_weight_norm_gives_the_same_conv():
    torch.manual_seed(0)
    conv = StreamingConv1d(3, 4, 5, weight_norm=True)
    with torch.no_grad():
        conv.conv.parametrizations.weight.original0.mul_(2.0)
    plain = StreamingConv1d(3, 4, 5)
    plain.load_state_dict(folded_state_dict(conv))
    x = torch.randn(1, 3, 50)
    torch.testing.assert_close(plain(x), conv(x))


def test_rope_scores_depend_only_on_relative_position():
    torch.manual_seed(0)
    q, k = torch.randn(1, 1, 2, 16), torch.randn(1, 1, 2, 16)

    def score(q_pos: int, k_pos: int) -> torch.Tensor:
        return (apply_rope(q, q_pos) * apply_rope(k, k_pos)).sum(-1)

    torch.testing.assert_close(score(7, 3), score(104, 100))
    assert not torch.allclose(score(7, 3), score(7, 4))


@pytest.mark.parametrize("context", [None, 5])
def test_transformer_streams_exactly_and_is_causal(context):
    torch.manual_seed(0)
    transformer = StreamingTransformer(16, 2, 2, 32, context=context, layer_scale=0.5).eval()
    x = torch.randn(2, 40, 16)
    full = transformer(x)
    torch.testing.assert_close(run_streamed(transformer, x, max_chunk=6, time_dim=1), full)
    assert_causal(transformer, x, cut=17, out_per_in=1.0, time_dim=1)


def test_local_attention_window_limits_the_past_and_the_cache():
    torch.manual_seed(0)
    transformer = StreamingTransformer(16, 2, 1, 32, context=4).eval()
    x = torch.randn(1, 20, 16)
    changed = x.clone()
    changed[:, 5] += 1.0  # one layer, window 4: only outputs 5..8 can see position 5
    delta = (transformer(x) - transformer(changed)).abs().sum(-1)[0]
    assert torch.all(delta[9:] == 0) and torch.all(delta[5:9] > 0)
    state = transformer.init_state(1)
    streamed = torch.cat([transformer(x[:, i : i + 1], state) for i in range(20)], dim=1)
    torch.testing.assert_close(streamed, transformer(x))
    for _ in range(200):  # a long stream: the cache is compacted, it does not grow with the stream
        transformer(torch.randn(1, 1, 16), state)
    assert state["layers.0"]["self_attn"]["keys"].shape[2] <= 16


@pytest.mark.parametrize("context", [None, 4])
def test_attention_weights_are_what_the_fused_pass_averages_with(context):
    """``attention_weights`` (diagnostics) is the fused kernel's attention: causal, windowed, rows of 1,
    and weights @ values gives the layer's output."""
    torch.manual_seed(0)
    attention = StreamingTransformer(16, 2, 1, 32, context=context).layers[0].self_attn.eval()
    x = torch.randn(2, 12, 16)
    weights = attention.attention_weights(x)
    assert weights.shape == (2, 2, 12, 12)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 2, 12))
    allowed = torch.ones(12, 12, dtype=torch.bool).tril()
    if context is not None:
        allowed &= ~torch.ones(12, 12, dtype=torch.bool).tril(-context)
    assert torch.all(weights[..., ~allowed] == 0) and torch.all(weights[..., allowed] > 0)
    _, _, values = attention._heads(x, 0)
    mixed = (weights @ values).transpose(1, 2).reshape(2, 12, 16)
    torch.testing.assert_close(attention.out_proj(mixed), attention(x))


def test_left_padded_batch_of_streams_equals_each_stream_alone():
    """Prefixes of different lengths, left-padded into one batch: each row equals its own stream."""
    torch.manual_seed(0)
    transformer = StreamingTransformer(16, 2, 2, 32).eval()
    prefixes = [torch.randn(7, 16), torch.randn(3, 16)]
    steps = torch.randn(2, 5, 16)
    batch = torch.zeros(2, 7, 16)
    valid = torch.zeros(2, 7, dtype=torch.bool)
    for row, prefix in enumerate(prefixes):
        batch[row, 7 - len(prefix) :], valid[row, 7 - len(prefix) :] = prefix, True
    state = transformer.init_state(2)
    transformer(batch, state, valid)
    batched = torch.cat([transformer(steps[:, i : i + 1], state) for i in range(5)], dim=1)
    assert torch.isfinite(batched).all()
    for row, prefix in enumerate(prefixes):
        alone = transformer.init_state(1)
        transformer(prefix[None], alone)
        expected = torch.cat([transformer(steps[row : row + 1, i : i + 1], alone) for i in range(5)], 1)
        torch.testing.assert_close(batched[row : row + 1], expected, atol=1e-5, rtol=1e-5)


def test_projected_transformer_conv_layout_streams():
    torch.manual_seed(0)
    transformer = ProjectedTransformer(6, 10, 16, 2, 1, 32, context=8).eval()
    x = torch.randn(2, 6, 25)
    full = transformer(x)
    assert full.shape == (2, 10, 25)
    torch.testing.assert_close(run_streamed(transformer, x, max_chunk=5), full)


def test_seanet_encoder_and_decoder_stream_exactly():
    torch.manual_seed(0)
    encoder = SEANetEncoder(dimension=8, n_filters=4, ratios=[4, 2], n_residual_layers=2)
    decoder = SEANetDecoder(dimension=8, n_filters=4, ratios=[4, 2], n_residual_layers=2)
    audio = torch.randn(2, 1, 8 * 30)
    features = encoder(audio)
    assert features.shape == (2, 8, 30)
    torch.testing.assert_close(run_streamed(encoder, audio, max_chunk=23), features)
    torch.testing.assert_close(run_streamed(decoder, features, max_chunk=4), decoder(features))
    assert_causal(encoder, audio, cut=8 * 13, out_per_in=1 / 8)
    assert_causal(decoder, features, cut=13, out_per_in=8)


def test_state_survives_flatten_and_restore():
    """A stream can be saved mid-way (e.g. as safetensors) and resumed with the same result."""
    torch.manual_seed(0)
    transformer = StreamingTransformer(16, 2, 2, 32).eval()
    x = torch.randn(1, 12, 16)
    state = transformer.init_state(1)
    first = transformer(x[:, :7], state)
    restored = unflatten_state(flatten_state(state), transformer.init_state(1))
    rest = transformer(x[:, 7:], restored)
    torch.testing.assert_close(torch.cat([first, rest], 1), transformer(x))
    with pytest.raises(KeyError, match="unknown"):
        unflatten_state({**flatten_state(state), "bogus": torch.zeros(1)}, transformer.init_state(1))


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("length", [9, StreamingConvTranspose1d.COLUMNS_FIRST_FROM + 3])
@pytest.mark.parametrize("batch", [1, 2])
def test_inference_transposed_conv_equals_torch(bias, length, batch):
    """The no-grad CPU path (one matrix product + overlap-add, in either product order, on a strided
    input too) computes what nn.ConvTranspose1d does."""
    torch.manual_seed(0)
    layer = StreamingConvTranspose1d(6, 5, kernel_size=12, stride=6, bias=bias)
    x = torch.randn(batch, length, 6).transpose(1, 2)  # [B, C, T], not contiguous
    with torch.no_grad():
        fast = layer._transposed_conv(x)
    torch.testing.assert_close(fast, layer.convtr(x))
    with torch.no_grad():
        torch.testing.assert_close(run_streamed(layer, x, max_chunk=2), layer(x))


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dilation", [1, 2])
def test_inference_narrow_conv_equals_torch(bias, dilation):
    """The no-grad CPU path of a conv with few output channels (a sum of shifted products) computes
    what nn.Conv1d does, in a full pass and streamed; a batch of two takes nn.Conv1d's path."""
    torch.manual_seed(0)
    layer = StreamingConv1d(16, 3, kernel_size=3, dilation=dilation, bias=bias)
    assert layer.shifted_products and not StreamingConv1d(16, 9, kernel_size=3).shifted_products
    x = torch.randn(1, 16, 40)
    with torch.no_grad():
        fast = layer._conv(x)
        torch.testing.assert_close(fast, layer.conv(x))
        full = layer(x)
        torch.testing.assert_close(run_streamed(layer, x, max_chunk=5), full)
    torch.testing.assert_close(full, layer(x))  # with grad: nn.Conv1d
    pair = torch.randn(2, 16, 40)
    with torch.no_grad():
        torch.testing.assert_close(layer(pair)[:1], layer(pair[:1]))


def test_rope_table_first_built_in_inference_mode_serves_training():
    """The cached cos/sin table is shared by inference and training (latent caching, then a step)."""
    layer = StreamingTransformer(16, 2, 1, 32, max_period=12_345.0)  # a period no other test uses
    with torch.inference_mode():
        layer(torch.randn(1, 5, 16))
    x = torch.randn(1, 5, 16, requires_grad=True)
    layer(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
