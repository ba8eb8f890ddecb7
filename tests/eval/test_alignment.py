"""The alignment report: per-head text attention of an exported teacher, read from its own
attention weights, and the ``alignment`` and ``validation-cuts`` sub-commands."""

from __future__ import annotations

import json

import pytest
import torch

from pockettts.eval.alignment import alignment_report, example_attention
from pockettts.eval.validation_cuts import validation_examples
from pockettts.tools.__main__ import main
from pockettts.training.teacher_module import export_flow_lm
from tests.support import TINY_FLOW_LM, cpu_trainer, tiny_teacher_module


def test_alignment_report_reads_the_exported_models_own_attention(teacher_data, tmp_path, capsys):
    """Per-head scores over the first items, heads ranked by progress; the text attention is the
    first layer's attention of the audio positions (after BOS, before EOS) onto the text tokens of
    the sequence [voice prefix, text, BOS + latents], rebuilt here by hand."""
    data = teacher_data()
    data.prepare_data()
    data.setup("fit")
    module = tiny_teacher_module()
    path = export_flow_lm(module.model, tmp_path / "export" / "teacher.safetensors", data)
    # Training's val/text_progress (padded batches) is the report's best head over the same cuts.
    trainer = cpu_trainer(tmp_path, max_steps=1, limit_val_batches=1.0)
    logged = trainer.validate(module, datamodule=data, verbose=False)[0]
    whole = alignment_report(path, data.valid_manifest, data.cache_dir)
    assert logged["val/text_progress"] == pytest.approx(whole["heads"][0]["progress"], abs=1e-5)
    report = alignment_report(path, data.valid_manifest, data.cache_dir, limit=3)
    heads = TINY_FLOW_LM["num_layers"] * TINY_FLOW_LM["num_heads"]
    assert report["items"] == 3 and len(report["heads"]) == heads
    assert all(0 < h["text_mass"] < 1 and -1 <= h["progress"] <= 1 for h in report["heads"])
    progress = [h["progress"] for h in report["heads"]]
    assert progress == sorted(progress, reverse=True)

    model, dataset, _ = validation_examples(path, data.valid_manifest, data.cache_dir)
    example = dataset[0]
    attention = example_attention(model, example)
    frames, tokens = example["target"].shape[0], example["tokens"].shape[0]
    assert attention.shape == (TINY_FLOW_LM["num_layers"], TINY_FLOW_LM["num_heads"], frames - 1, tokens)
    with torch.no_grad():
        voice, text, target = example["voice"], example["tokens"], example["target"]
        audio = model.input_linear(model.audio_inputs(model.normalize(target[None])))[0]
        sequence = torch.cat([model.prefix(voice, text), audio])[None]
        first = model.transformer.layers[0]
        weights = first.self_attn.attention_weights(first.norm1(sequence))[0]
    text_start = 1 + voice.shape[0]  # the BOS before the voice, then one position per voice frame
    audio_start = text_start + tokens
    expected = weights[:, audio_start + 1 : audio_start + frames, text_start:audio_start]
    torch.testing.assert_close(attention[0], expected)
    args = ["--teacher", str(path), "--manifest", str(data.valid_manifest), "--cache", str(data.cache_dir)]
    out = tmp_path / "report" / "alignment.json"
    plot = tmp_path / "head.png"
    assert main(["alignment", *args, "--limit", "2", "--plot", str(plot), "--out", str(out)]) == 0
    assert (tmp_path / "head.png").stat().st_size > 0
    written = alignment_report(path, data.valid_manifest, data.cache_dir, limit=2)
    assert json.loads(out.read_text()) == json.loads(json.dumps(written))
    capsys.readouterr()
    assert main(["validation-cuts", *args, "--limit", "2"]) == 0  # the cuts the reports read
    cuts = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [cut["id"] for cut in cuts] == [dataset[0]["id"], dataset[1]["id"]]
    assert cuts[0]["target_frames"] == frames and cuts[0]["tokens"] == tokens
