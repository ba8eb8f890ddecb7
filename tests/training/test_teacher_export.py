"""Exporting the teacher and starting from an export: the weights and tokenizer written at the end
of training, ``init_from`` with a new tokenizer, and ``grow_layers`` into a deeper teacher."""

from __future__ import annotations

import pytest
import torch

from pockettts.models.bundle import read_export, write_export
from pockettts.models.flow_lm import FlowLM
from pockettts.training.teacher_module import load_weights
from tests.support import TINY_FLOW_LM, TINY_VOCAB, cpu_trainer, tiny_teacher_module


def test_export_and_init_from_with_a_new_tokenizer(teacher_data, tmp_path):
    module = tiny_teacher_module(export_path=str(tmp_path / "export" / "teacher.safetensors"))
    cpu_trainer(tmp_path, max_steps=2).fit(module, datamodule=teacher_data())
    exported = tmp_path / "export" / "teacher.safetensors"
    assert (tmp_path / "export" / "tokenizer.model").is_file()
    export = read_export(exported)
    assert (export.step, export.ema) == (2, module.ema is not None)
    loaded = export.flow_lm
    with module.exported_weights() as model:
        for name, tensor in model.state_dict().items():
            torch.testing.assert_close(loaded.state_dict()[name], tensor)
    bigger = FlowLM(**{**TINY_FLOW_LM, "vocab_size": TINY_VOCAB + 10})
    load_weights(bigger, exported)  # new language: text embedding re-initialised, the rest copied
    torch.testing.assert_close(
        bigger.transformer.layers[0].linear1.weight, loaded.transformer.layers[0].linear1.weight
    )
    deeper = FlowLM(**{**TINY_FLOW_LM, "num_layers": 3})
    with pytest.raises(ValueError, match="does not fit"):
        load_weights(deeper, exported)


def test_init_from_a_shallower_teacher_grows_it_without_changing_what_it_computes(tmp_path):
    """``grow_layers``: the 2 source layers spread over 5, the added ones identity blocks at step 0,
    so the grown teacher's outputs equal the source's; training then moves the added layers."""
    torch.manual_seed(0)
    source = FlowLM(**TINY_FLOW_LM).eval()
    for parameter in source.parameters():  # non-trivial everywhere, not just the initialisation
        parameter.data.normal_(0.0, 0.2)
    exported = write_export(source, tmp_path / "source.safetensors")
    grown = FlowLM(**{**TINY_FLOW_LM, "num_layers": 5}).eval()
    load_weights(grown, exported, grow_layers=True)
    layers = grown.transformer.layers
    # Source layers at 0 and 2 (index * 5 // 2); 1 copies 0, 3 and 4 copy 1, outputs zeroed.
    second = source.transformer.layers[1]
    torch.testing.assert_close(layers[2].linear1.weight, second.linear1.weight)
    torch.testing.assert_close(layers[4].self_attn.in_proj.weight, second.self_attn.in_proj.weight)
    for added in (1, 3, 4):
        assert not layers[added].linear2.weight.any() and not layers[added].self_attn.out_proj.weight.any()
    batch = dict(
        voice=torch.randn(2, 5, 8), voice_lengths=torch.tensor([5, 3]),
        text=torch.randint(0, TINY_VOCAB, (2, 6)), text_lengths=torch.tensor([6, 4]),
        target=torch.randn(2, 9, 8), target_lengths=torch.tensor([9, 7]),
    )  # fmt: skip
    with torch.no_grad():
        expected, got = source(**batch), grown(**batch)
    torch.testing.assert_close(got["z"], expected["z"])
    torch.testing.assert_close(got["eos_logits"], expected["eos_logits"])
    grown.train()
    out = grown(**batch)
    loss, _ = grown.head_loss(out)
    loss.backward()
    assert layers[1].linear2.weight.grad.abs().sum() > 0  # the added layers learn from step 1
    with pytest.raises(ValueError, match="cannot grow 2 transformer layers into 1"):
        load_weights(FlowLM(**{**TINY_FLOW_LM, "num_layers": 1}), exported, grow_layers=True)


def test_init_fresh_keeps_a_new_head_and_short_context_and_copies_the_backbone(tmp_path):
    """``init_fresh``: an LSD teacher's backbone under a fresh consistency head and a new short-context
    transformer; without it the missing parts are an error, and a name that is no part is one too."""
    torch.manual_seed(0)
    source = FlowLM(**TINY_FLOW_LM)
    exported = write_export(source, tmp_path / "lsd.safetensors")
    options = {**TINY_FLOW_LM, "head": {**TINY_FLOW_LM["head"], "kind": "consistency"}}
    options["short_context"] = {"width": 16, "num_heads": 2, "num_layers": 1, "context": 4}
    calm = FlowLM(**options)
    with pytest.raises(ValueError, match="missing"):
        load_weights(calm, exported)
    fresh_head = {k: v.clone() for k, v in calm.state_dict().items() if k.startswith("head.")}
    load_weights(calm, exported, init_fresh=["head", "short_context"])
    for name, value in calm.state_dict().items():
        if name.startswith("head."):
            torch.testing.assert_close(value, fresh_head[name])
        elif not name.startswith("short_context."):
            torch.testing.assert_close(value, source.state_dict()[name])
    with pytest.raises(ValueError, match="no part \\['encoder'\\]"):
        load_weights(calm, exported, init_fresh=["encoder"])
