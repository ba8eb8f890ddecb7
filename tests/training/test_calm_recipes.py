"""The named recipes beside Kyutai's open one: the CALM teacher and student presets and the paper's
values compose with what their sources give, and a tiny CALM teacher and its student train, export
and speak end to end."""

from __future__ import annotations

import pytest
import torch

from pockettts.models.bundle import read_export
from pockettts.models.flow_lm import ShortContextTransformer
from pockettts.models.heads import ConsistencyHead, build_head
from tests.support import TINY_VOCAB, compose_experiment, logged_columns, run_stage, speak_from_export


@pytest.mark.parametrize("experiment, short_context_width, warmup, steps, short_context_millions", [
    ("teacher_calm_300m", 256, 10_000, 400_000, 1.85),  # beside teacher_300m's 316.0M
    ("teacher_calm_tiny", 64, 200, 2000, 0.11),  # beside teacher_tiny's 1.24M
])  # fmt: skip
def test_calm_teachers_have_noise_on_every_position_short_context_and_the_consistency_head(
    experiment, short_context_width, warmup, steps, short_context_millions
):
    cfg = compose_experiment("train", experiment)
    model = cfg.model.model
    assert dict(model.context_noise) == {"max_level": 1.0, "distribution": "uniform"}  # k ~ U(0, 1)
    assert dict(model.short_context) == {
        "width": short_context_width, "num_heads": 4, "num_layers": 2, "context": 10
    }  # fmt: skip
    assert model.head.kind == "consistency" and model.head.batch_multiplier == 8
    # the tangent ramp ends within the first tenth of the run (sCM: 10k of its 100k-400k iterations)
    assert model.head.tangent_warmup_steps == warmup and warmup <= cfg.trainer.max_steps / 10
    assert cfg.trainer.max_steps == steps
    assert cfg.callbacks.speech_samples.sampling.cfg_scale == 1.5
    # the parts CALM adds, built alone (300M random weights take a while to draw on a CPU)
    short_context = ShortContextTransformer(model.latent_dim, model.d_model, **model.short_context)
    millions = sum(p.numel() for p in short_context.parameters()) / 1e6
    assert millions == pytest.approx(short_context_millions, rel=0.02)
    head = build_head(**model.head, latent_dim=model.latent_dim, cond_dim=model.d_model)
    assert isinstance(head, ConsistencyHead)
    assert (head.sigma_data, head.p_mean, head.p_std, head.tangent_norm_c) == (1.0, -1.0, 1.4, 0.1)


def test_the_paper_values_differ_from_the_open_recipe_only_where_the_paper_says_so():
    open_teacher, paper_teacher = (
        compose_experiment("train", "teacher_300m"),
        compose_experiment("train", "teacher_300m_paper"),
    )
    # the CALM teacher is the paper-value teacher with CALM's three parts
    calm = compose_experiment("train", "teacher_calm_300m")
    calm.model.model.context_noise = calm.model.model.short_context = None
    calm.model.model.head = paper_teacher.model.model.head
    calm.tags = paper_teacher.tags
    assert calm == paper_teacher

    head = paper_teacher.model.model.head
    assert (open_teacher.model.model.head.batch_multiplier, head.batch_multiplier) == (4, 8)
    assert head.kind == "lsd" and paper_teacher.model.model.context_noise is None
    head.batch_multiplier = 4
    paper_teacher.callbacks.speech_samples.sampling.cfg_scale = 2.0
    paper_teacher.tags = open_teacher.tags
    assert paper_teacher == open_teacher
    for experiment, cfg_scale in [
        ("student_100m", 2.0), ("student_100m_paper", 1.5), ("student_calm_100m", 1.5),
        ("student_tiny", 2.0), ("student_calm_tiny", 1.5),
    ]:  # fmt: skip
        cfg = compose_experiment("distill", experiment)
        assert cfg.model.cfg_scale == cfg_scale, experiment
        assert cfg.callbacks.speech_samples.sampling.cfg_scale == 1.0  # the guidance is baked in


@pytest.mark.slow  # a train.py and a distill.py process: ≈ 35 s of CPU
def test_a_tiny_calm_teacher_and_its_student_train_export_and_speak(tiny_corpus, tiny_vae, tmp_path):
    vae = tiny_vae.save(tmp_path / "vae.safetensors")
    teacher_dir, student_dir = tmp_path / "teacher", tmp_path / "student"
    for folder in (teacher_dir, student_dir):
        folder.mkdir()
    teacher_args = (f"model.model.vocab_size={TINY_VOCAB}", "model.model.latent_dim=8",
                    "trainer.log_every_n_steps=1")  # fmt: skip
    teacher_run = run_stage("train.py", "teacher_calm_tiny", tiny_corpus, vae, teacher_dir, *teacher_args)
    teacher = read_export(teacher_run / "export" / "teacher.safetensors").flow_lm
    assert teacher.context_noise.max_level == 1.0 and teacher.short_context is not None
    assert isinstance(teacher.head, ConsistencyHead) and int(teacher.head.num_updates) == 2
    assert {"train/head/consistency", "train/head/tangent_norm"} <= logged_columns(teacher_run)
    assert (teacher_run / "samples" / "step_0000002" / "example0_generated.wav").is_file()

    # the teacher run's tokenizer and latent cache
    student_args = (f"teacher={teacher_run / 'export' / 'teacher.safetensors'}",
                    f"data.tokenizer={teacher_dir / 'tok' / 'tokenizer.model'}",
                    f"data.cache_dir={teacher_dir / 'latents'}")  # fmt: skip
    student_run = run_stage("distill.py", "student_calm_tiny", tiny_corpus, vae, student_dir, *student_args)
    student_export = student_run / "export" / "student.safetensors"
    student = read_export(student_export).flow_lm
    # What the student keeps of CALM: the short-context transformer (trained with the backbone) and the
    # teacher's consistency head, frozen; not the context noise, a training-time augmentation.
    assert len(student.transformer.layers) == 2 and student.context_noise is None
    assert student.short_context is not None and isinstance(student.head, ConsistencyHead)
    for name, value in teacher.head.named_parameters():
        assert torch.equal(student.head.get_parameter(name), value), name
    assert (student_run / "samples" / "step_0000002" / "example0_generated.wav").is_file()

    speak_from_export(student_export, tiny_corpus)
