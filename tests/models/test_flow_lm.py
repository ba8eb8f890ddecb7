"""The backbone: causality, CFG null branch, streaming equals teacher forcing, padding independence,
context-noise statistics, latent statistics, generation stopping, export; the 2026-10 small models'
options (projected and grouped-query attention, the z bottleneck, a low-rank text table)."""

from __future__ import annotations

import pytest
import torch

from pockettts.models.bundle import read_export, write_export
from pockettts.models.flow_lm import MIN_FRAMES_BEFORE_EOS, ContextNoise, FlowLM
from pockettts.models.sampling import SamplingOptions

TINY = dict(
    head={"kind": "lsd", "dim": 32, "depth": 2},
    d_model=32,
    num_heads=4,
    num_layers=2,
    dim_feedforward=64,
    vocab_size=50,
    latent_dim=8,
)
# The small models' options: projected grouped-query attention, a 6-d bottleneck, a rank-5 text table.
SMALL = dict(attn_dim=24, num_kv_heads=2, z_dim=6, text_rank=5)


def _model(**overrides) -> FlowLM:
    torch.manual_seed(0)
    model = FlowLM(**{**TINY, **overrides}).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.startswith("head."):
                param.normal_(0.0, 0.1)
    return model


def _row(seed: int = 0, voice: int = 5, text: int = 6, frames: int = 9):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(voice, 8, generator=g),
        torch.randint(0, 50, (text,), generator=g),
        torch.randn(frames, 8, generator=g),
    )


def _forward(model, voice, tokens, target, **kwargs):
    n = lambda t: torch.tensor([t.shape[0]])  # noqa: E731
    return model(voice[None], n(voice), tokens[None], n(tokens), target[None], n(target), **kwargs)


def test_outputs_are_causal_in_the_audio():
    model = _model()
    voice, tokens, target = _row()
    z = _forward(model, voice, tokens, target)["z"][0]
    changed = target.clone()
    changed[4] += 1.0
    z_changed = _forward(model, voice, tokens, changed)["z"][0]
    # position j reads frames < j: frame 4 first influences position 5
    torch.testing.assert_close(z[:5], z_changed[:5])
    assert not torch.allclose(z[5:], z_changed[5:])


def test_cfg_dropout_removes_voice_and_text():
    model = _model()
    voice, tokens, target = _row()
    yes = torch.tensor([True])
    dropped = _forward(model, voice, tokens, target, drop_voice=yes, drop_text=yes)["z"][0]
    empty = _forward(model, voice[:0], tokens[:0], target)["z"][0]
    torch.testing.assert_close(dropped, empty)  # removed, not zeroed
    zeroed = _forward(model, torch.zeros_like(voice), tokens, target)["z"][0]
    only_text = _forward(model, voice, tokens, target, drop_voice=yes)["z"][0]
    assert not torch.allclose(only_text, zeroed)
    # and the null branch of generation is the same thing
    state = model.prefill(None, None)
    first = model.step(model.bos_emb[None], state)
    torch.testing.assert_close(first[0], dropped[0])


@pytest.mark.parametrize("options", [{}, SMALL])
def test_streaming_generation_path_equals_teacher_forcing(options):
    model = _model(short_context={"width": 16, "num_heads": 2, "num_layers": 1, "context": 3}, **options)
    with torch.no_grad():
        model.short_context.output_linear.weight.normal_()  # make the short-context branch matter
    voice, tokens, target = _row()
    z = _forward(model, voice, tokens, target)["z"][0]
    state = model.prefill(voice, tokens)
    previous = model.bos_emb[None]
    normalized = model.normalize(target)
    streamed = []
    for j in range(target.shape[0] + 1):
        streamed.append(model.step(previous, state)[0])
        if j < target.shape[0]:
            previous = normalized[j][None]
    torch.testing.assert_close(torch.stack(streamed), z, atol=1e-5, rtol=1e-5)


def test_rows_do_not_see_each_others_padding():
    model = _model()
    rows = [_row(0, 5, 6, 9), _row(1, 2, 11, 4)]
    pad = lambda ts: torch.nn.utils.rnn.pad_sequence(ts, batch_first=True)  # noqa: E731
    lengths = lambda ts: torch.tensor([t.shape[0] for t in ts])  # noqa: E731
    parts = list(zip(*rows))
    out = model(
        pad(parts[0]), lengths(parts[0]), pad(parts[1]), lengths(parts[1]), pad(parts[2]), lengths(parts[2])
    )
    for i, (voice, tokens, target) in enumerate(rows):
        alone = _forward(model, voice, tokens, target)
        n = target.shape[0] + 1
        torch.testing.assert_close(out["z"][i, :n], alone["z"][0], atol=1e-5, rtol=1e-5)
        assert out["valid"][i].sum() == n


def test_context_noise_statistics():
    torch.manual_seed(0)
    noise = ContextNoise(max_level=0.5).train()
    x = torch.randn(64, 200, 16)
    noisy, levels = noise(x)
    assert levels.min() >= 0 and levels.max() <= 0.5
    assert abs(levels.mean().item() - 0.25) < 0.01  # U(0, 0.5)
    assert abs(noisy.var().item() - 1.0) < 0.03  # variance preserving for unit-variance latents
    # the clean signal's share shrinks with the level: corr(x, noisy) = sqrt(1 - k)
    low, high = levels < 0.1, levels > 0.4
    corr = lambda m: torch.corrcoef(torch.stack([x[m].flatten(), noisy[m].flatten()]))[0, 1]  # noqa: E731
    assert corr(low) > 0.97 and 0.7 < corr(high) < 0.8
    noise.eval()
    assert torch.equal(noise(x)[0], x)
    assert torch.equal(ContextNoise(max_level=0.0).train()(x)[0], x)
    with pytest.raises(ValueError, match="max_level"):
        ContextNoise(max_level=1.5)


def test_context_noise_reaches_the_backbone_only_in_training():
    model = _model(context_noise={"max_level": 1.0})
    voice, tokens, target = _row()
    eval_z = _forward(model, voice, tokens, target)["z"]
    model.train()
    model.stats_updates.fill_(10_000)  # keep the normalisation fixed
    torch.manual_seed(1)
    train_z = _forward(model, voice, tokens, target)["z"]
    assert not torch.allclose(train_z[:, 1:], eval_z[:, 1:])
    torch.testing.assert_close(train_z[:, 0], eval_z[:, 0])  # BOS position reads no audio


def test_latent_statistics_follow_batches_then_freeze():
    model = _model(stats_ema_steps=2).train()
    voice, tokens, target = _row()
    _forward(model, voice, tokens, target * 3 + 1)
    torch.testing.assert_close(model.emb_mean, (target * 3 + 1).mean(0))  # first update: copy
    _forward(model, voice, tokens, target)
    frozen = model.emb_mean.clone()
    _forward(model, voice, tokens, target + 5)
    torch.testing.assert_close(model.emb_mean, frozen)


@pytest.mark.parametrize("options", [{}, SMALL])
def test_generation_stops_after_eos_and_export_reloads(tmp_path, options):
    model = _model(**options)
    voice, tokens, _ = _row()
    with torch.no_grad():
        model.out_eos.bias.fill_(100.0)  # EOS everywhere: stop as early as allowed
    latents = model.generate(voice, tokens, SamplingOptions(max_frames=50, frames_after_eos=4))
    assert latents.shape == (MIN_FRAMES_BEFORE_EOS + 4, 8)
    with torch.no_grad():
        model.out_eos.bias.fill_(-100.0)
    assert model.generate(voice, tokens, SamplingOptions(max_frames=12)).shape == (12, 8)
    with pytest.raises(ValueError, match="max_frames"):
        model.generate(voice, tokens, SamplingOptions())
    options = SamplingOptions(max_frames=5, seed=3)
    guided = model.generate(voice, tokens, SamplingOptions(max_frames=5, seed=3, cfg_scale=2.0))
    assert not torch.allclose(guided, model.generate(voice, tokens, options))
    assert not torch.allclose(model.generate(voice, tokens, SamplingOptions(max_frames=5, seed=4)),
                              model.generate(voice, tokens, options))  # fmt: skip
    loaded = read_export(write_export(model, tmp_path / "teacher.safetensors")).flow_lm
    again = loaded.generate(voice, tokens, options)
    torch.testing.assert_close(again, model.generate(voice, tokens, options))


def test_small_model_options_shape_the_model():
    """``z`` is the bottleneck's output (z_dim wide) wherever the model returns it, and the head and
    the EOS logit read it; the text table is low-rank; attention is projected and grouped."""
    model = _model(**SMALL)
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    assert shapes["z_proj.weight"] == (6, 32) and shapes["out_eos.weight"] == (1, 6)
    assert shapes["conditioner.embed.weight"] == (51, 5) and shapes["conditioner.proj.weight"] == (32, 5)
    assert shapes["transformer.layers.0.self_attn.in_proj.weight"] == (24 + 2 * 2 * 6, 32)
    assert shapes["transformer.layers.0.self_attn.out_proj.weight"] == (32, 24)
    assert model.head.flow_net.cond_channels == 6 and model.z_proj.bias is None
    voice, tokens, target = _row()
    out = _forward(model, voice, tokens, target)
    assert out["z"].shape == (1, 10, 6)
    torch.testing.assert_close(out["eos_logits"], model.out_eos(out["z"]).squeeze(-1))
    z = model.step(model.bos_emb[None], model.prefill(voice, tokens))
    assert z.shape == (1, 6)
    loss, _ = model.head_loss(out)
    assert torch.isfinite(loss)
    with pytest.raises(ValueError, match="z_dim"):
        FlowLM(**{**TINY, "z_dim": 0})
    with pytest.raises(ValueError, match="rank"):
        FlowLM(**{**TINY, "text_rank": 0})
