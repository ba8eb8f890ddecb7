"""Parity with Kyutai's ``pocket-tts`` FlowLM, built from its own config with random weights: the
same backbone outputs, EOS logits and one-step head samples for the same voice, text, latents and
noise, after converting weights in either direction."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pockettts.compat.flow_lm import (
    flow_lm_config_from_pocket,
    flow_lm_to_pocket_state_dict,
    pocket_to_flow_lm_state_dict,
)
from pockettts.models.flow_lm import FlowLM
from pockettts.text import train_tokenizer

pytest.importorskip("pocket_tts", reason="parity needs the pocket-tts test dependency")
from pocket_tts.models.flow_lm import FlowLMModel, lsd_decode  # noqa: E402
from pocket_tts.modules.stateful_module import increment_steps, init_states  # noqa: E402
from pocket_tts.utils.config import CONFIGS_DIR, load_config  # noqa: E402

VOCAB = 96


@pytest.fixture(scope="module")
def tokenizer_path(tiny_corpus_module):
    return train_tokenizer([tiny_corpus_module / "train.jsonl"], tiny_corpus_module / "tok", vocab_size=VOCAB)


@pytest.fixture(scope="module")
def tiny_corpus_module(tmp_path_factory):
    from pockettts.data.synthetic import DemoCorpusConfig, build_demo_corpus

    out = tmp_path_factory.mktemp("flowlm_corpus")
    build_demo_corpus(out, DemoCorpusConfig(voices=["flite:slt"], max_sentences=30, seed=3), progress=False)
    return out


def _reference(tokenizer_path, num_layers: int = 2):
    """pocket-tts's FlowLM from its english.yaml (2 of its 6 layers, to keep the test fast)."""
    config = load_config(CONFIGS_DIR / "english.yaml").flow_lm
    config.transformer.num_layers = num_layers
    config.lookup_table.n_bins = VOCAB
    config.lookup_table.tokenizer = "sentencepiece"
    config.lookup_table.tokenizer_path = str(tokenizer_path)
    torch.manual_seed(0)
    model = FlowLMModel.from_pydantic_config(config, latent_dim=32, insert_bos_before_voice=True)
    model.speaker_proj_weight = nn.Parameter(torch.randn(config.transformer.d_model, 32) * 0.05)
    with torch.no_grad():  # zero-initialised parts (adaLN, final layer) would hide differences
        for name, param in model.named_parameters():
            if name.startswith("flow_net."):
                param.normal_(0.0, 0.05)
        model.emb_mean.normal_()
        model.emb_std.uniform_(0.5, 2.0)
    for name, module in model.named_modules():
        module._module_absolute_name = name
    return model.eval(), config.model_dump()


def _reference_outputs(model, voice, tokens, normalized):
    """What pocket-tts computes: voice prefix, then text, then [BOS, latents] through its KV cache."""
    state = init_states(model, batch_size=1, sequence_length=256)
    empty_latents = torch.empty(1, 0, 32)
    prefix = torch.cat([model.bos_before_voice, F.linear(voice[None], model.speaker_proj_weight)], dim=1)
    for embeddings in (prefix, model.conditioner(tokens[None])):
        model.backbone(torch.empty(1, 0, model.dim), embeddings, empty_latents, model_state=state)
        increment_steps(model, state, increment=embeddings.shape[1])
    sequence = torch.cat([torch.full((1, 1, 32), float("nan")), normalized[None]], dim=1)
    inputs = model.input_linear(torch.where(torch.isnan(sequence), model.bos_emb, sequence))
    z = model.backbone(inputs, torch.empty(1, 0, model.dim), sequence, model_state=state)[0]
    return z, model.out_eos(z)[:, 0]


def _inputs(seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    voice = torch.randn(9, 32, generator=generator)
    tokens = torch.randint(0, VOCAB, (7,), generator=generator)
    normalized = torch.randn(11, 32, generator=generator)
    return voice, tokens, normalized


def _ours_outputs(model: FlowLM, voice, tokens, normalized):
    target = model.denormalize(normalized)
    length = lambda t: torch.tensor([t.shape[0]])  # noqa: E731
    out = model(voice[None], length(voice), tokens[None], length(tokens), target[None], length(target))
    return out["z"][0], out["eos_logits"][0]


def _assert_same(reference, ours: FlowLM):
    voice, tokens, normalized = _inputs()
    with torch.no_grad():
        z_ref, eos_ref = _reference_outputs(reference, voice, tokens, normalized)
        z, eos = _ours_outputs(ours, voice, tokens, normalized)
        torch.testing.assert_close(z, z_ref, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(eos, eos_ref, atol=1e-4, rtol=1e-4)
        noise = torch.randn(z.shape[0], 32, generator=torch.Generator().manual_seed(5))
        expected = lsd_decode(functools.partial(reference.flow_net, z_ref), noise, 1)
        torch.testing.assert_close(ours.head.sample(z, noise, 1), expected, atol=1e-4, rtol=1e-4)


def test_released_weights_convert_to_the_same_model(tokenizer_path):
    reference, config = _reference(tokenizer_path)
    ours = FlowLM(**flow_lm_config_from_pocket(config)).eval()
    converted = pocket_to_flow_lm_state_dict({f"flow_lm.{k}": v for k, v in reference.state_dict().items()})
    missing, unexpected = ours.load_state_dict(converted, strict=False)
    assert not unexpected
    assert all(
        k.startswith("head.w_s_t.") or k in ("stats_updates", "head.distill_calls") for k in missing
    ), missing
    _assert_same(reference, ours)


def test_our_weights_run_in_the_reference_package(tokenizer_path):
    reference, config = _reference(tokenizer_path)
    torch.manual_seed(7)
    ours = FlowLM(**flow_lm_config_from_pocket(config)).eval()
    with torch.no_grad():
        for name, param in ours.named_parameters():
            if name.startswith("head.flow_net."):
                param.normal_(0.0, 0.05)
        ours.set_latent_statistics(torch.randn(32), torch.rand(32) + 0.5)
    exported = flow_lm_to_pocket_state_dict(ours)
    reference.load_state_dict({k.removeprefix("flow_lm."): v for k, v in exported.items()}, strict=True)
    _assert_same(reference, ours)


def test_training_layout_names_are_read():
    tensors = {
        "condition_provider.conditioners.transcript_in_segment.embed.weight": torch.zeros(5, 4),
        "condition_provider.conditioners.speaker_wavs.output_proj.weight": torch.zeros(4, 2),
        "condition_provider.conditioners.speaker_wavs.learnt_padding": torch.zeros(1),
        "fuser.padding_value": torch.zeros(1, 1, 4),
        "transformer.layers.0.self_attn.in_proj_weight": torch.zeros(12, 4),
        "flow.w_s_t.0.weight": torch.zeros(32, 2),
        "flow_net.input_proj.weight": torch.zeros(3, 2),
        "num_ema_updates": torch.zeros(()),
    }
    assert sorted(pocket_to_flow_lm_state_dict(tensors)) == [
        "bos_before_voice",
        "conditioner.embed.weight",
        "head.flow_net.input_proj.weight",
        "head.w_s_t.0.weight",
        "speaker_proj_weight",
        "transformer.layers.0.self_attn.in_proj.weight",
    ]


def test_calm_additions_refuse_the_pocket_layout():
    short = {"width": 8, "num_heads": 2, "num_layers": 1}
    model = FlowLM(
        head={"kind": "lsd", "dim": 16, "depth": 1},
        d_model=16,
        num_heads=2,
        num_layers=1,
        dim_feedforward=32,
        vocab_size=10,
        short_context=short,
    )
    with pytest.raises(ValueError, match="short-context"):
        flow_lm_to_pocket_state_dict(model)


def test_whole_released_file_imports_and_exports(tokenizer_path, tmp_path):
    """A Pocket TTS model file (flow_lm.* + mimi.*) and its yaml load into ours and give the same
    backbone and head outputs; ours saved back in that layout reloads unchanged."""
    import yaml
    from pocket_tts.models.mimi import build_mimi
    from safetensors.torch import save_file

    from pockettts.compat.pocket import load_pocket_tts, save_pocket_tts

    reference, _ = _reference(tokenizer_path)
    full_config = load_config(CONFIGS_DIR / "english.yaml")
    torch.manual_seed(2)
    mimi = build_mimi(full_config.mimi)
    tensors = {f"flow_lm.{k}": v for k, v in reference.state_dict().items()}
    tensors.update({f"mimi.{k}": v for k, v in mimi.state_dict().items()})
    weights = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(weights))
    config = yaml.safe_load((CONFIGS_DIR / "english.yaml").read_text())
    config["flow_lm"]["transformer"]["num_layers"] = 2
    config["flow_lm"]["lookup_table"]["n_bins"] = VOCAB
    flow_lm, vae = load_pocket_tts(weights, config)
    _assert_same(reference, flow_lm)
    assert vae.latent_dim == 32
    from pockettts.models.bundle import read_export
    from pockettts.tools.__main__ import main as tools_main

    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config))
    argv = ["import-kyutai", "--weights", str(weights), "--config", str(config_file)]
    assert tools_main([*argv, "--out", str(tmp_path / "ours")]) == 0
    _assert_same(reference, read_export(tmp_path / "ours" / "flow_lm.safetensors").flow_lm)
    again = save_pocket_tts(flow_lm, vae, tmp_path / "again.safetensors")
    flow_lm2, _ = load_pocket_tts(again, config)
    for name, tensor in flow_lm.state_dict().items():
        torch.testing.assert_close(flow_lm2.state_dict()[name], tensor)
