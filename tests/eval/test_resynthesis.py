"""The resynthesis report: generated and codec audio transcribed by Whisper tiny.en, and teacher
forcing on a generation, which reproduces it and reads only the past."""

from __future__ import annotations

import torch

from pockettts.eval.resynthesis import resynthesis_report, teacher_forced_latents
from pockettts.eval.validation_cuts import validation_examples
from pockettts.models.sampling import SamplingOptions
from pockettts.training.teacher_module import export_flow_lm
from tests.support import cpu_trainer, tiny_teacher_module


def test_resynthesis_report_transcribes_generation_and_codec(teacher_data, tiny_en, tmp_path):
    data = teacher_data()
    module = tiny_teacher_module(export_path=str(tmp_path / "export" / "teacher.safetensors"))
    cpu_trainer(tmp_path, max_steps=1).fit(module, datamodule=data)
    summary = resynthesis_report(
        tmp_path / "export" / "teacher.safetensors", data.valid_manifest, data.cache_dir, tiny_en[0],
        tmp_path / "resynthesis", max_seconds=1.0, limit=1,
    )  # fmt: skip
    assert summary["items"] == 1 and 0.0 <= summary["codec_wer"] and summary["generated_wer"] >= 0.0
    row = (tmp_path / "resynthesis" / "items.jsonl").read_text().strip()
    assert "generated_transcript" in row and list((tmp_path / "resynthesis").glob("*_generated.wav"))


def test_teacher_forcing_on_a_generation_reproduces_it_and_reads_only_the_past(
    teacher_data, tiny_en, tmp_path
):
    data = teacher_data()
    data.prepare_data()
    data.setup("fit")
    module = tiny_teacher_module()
    with torch.no_grad():  # AdaLN-zero: at init the head ignores z and every frame would be the same
        for parameter in module.model.head.parameters():
            parameter.normal_(0.0, 0.2)
    path = export_flow_lm(module.model, tmp_path / "export" / "teacher.safetensors", data)
    model, dataset, _ = validation_examples(path, data.valid_manifest, data.cache_dir)
    example = dataset[0]
    voice, tokens, target = example["voice"], example["tokens"], example["target"]
    for cfg_scale in (1.0, 2.0):
        # Each generated frame came from the frames generated before it: fed back as the real past,
        # teacher forcing must predict the same frames (no noise: temperature 0).
        noiseless = SamplingOptions(cfg_scale=cfg_scale, temperature=0.0, max_frames=5)
        generated = model.generate(voice, tokens, noiseless)
        assert generated.shape[0] == 5
        forced = teacher_forced_latents(model, voice, tokens, generated, noiseless)
        torch.testing.assert_close(forced, generated, atol=1e-5, rtol=1e-5)
    # Frame j reads the real frames < j only.
    changed = target.clone()
    changed[3] += 1.0
    draws = [
        teacher_forced_latents(model, voice, tokens, t, SamplingOptions(cfg_scale=2.0, seed=0))
        for t in (target, changed)
    ]
    assert torch.equal(draws[0][:4], draws[1][:4]) and not torch.allclose(draws[0][4:], draws[1][4:])
    summary = resynthesis_report(
        path, data.valid_manifest, data.cache_dir, tiny_en[0], tmp_path / "forced", limit=1,
        teacher_forced=True,
    )  # fmt: skip
    assert summary["mode"] == "teacher_forced" and summary["length_ratio"] == 1.0
