"""Stage 3: the student starts from the teacher's "ends" layers with the head and EOS head frozen,
regresses onto the guided teacher output, and distill.py runs end to end; a student of its own
architecture learns the guided teacher's samples (sample level)."""

from __future__ import annotations

import functools

import pytest
import torch

from pockettts.data.examples import TeacherBatch
from pockettts.models.bundle import read_export, write_export
from pockettts.models.flow_lm import FlowLM
from pockettts.models.heads import PointwiseHead
from pockettts.models.sampling import SamplingOptions
from pockettts.training.distill_module import DistillationModule, ends_layers, student_from_teacher
from pockettts.training.teacher_module import teacher_forced
from tests.support import TINY_FLOW_LM, TINY_VOCAB, cpu_trainer, logged_columns, run_stage


def test_ends_layers_match_kyutai():
    assert ends_layers(24, 6) == [0, 1, 2, 21, 22, 23]
    assert ends_layers(4, 2) == [0, 3]
    assert ends_layers(5, 3) == [0, 1, 4]
    with pytest.raises(ValueError, match="cannot take"):
        ends_layers(4, 5)


def test_student_copies_the_chosen_layers_and_everything_else():
    torch.manual_seed(0)
    teacher = FlowLM(**{**TINY_FLOW_LM, "num_layers": 4, "context_noise": {"max_level": 0.5}}).eval()
    student = student_from_teacher(teacher, [0, 3])
    assert len(student.transformer.layers) == 2 and student.context_noise is None
    for s_index, t_index in [(0, 0), (1, 3)]:
        torch.testing.assert_close(
            student.transformer.layers[s_index].linear1.weight,
            teacher.transformer.layers[t_index].linear1.weight,
        )
    for name in ("conditioner.embed.weight", "speaker_proj_weight", "out_eos.weight", "emb_std"):
        torch.testing.assert_close(student.state_dict()[name], teacher.state_dict()[name])


@pytest.fixture
def exported_teacher(tmp_path):
    torch.manual_seed(1)
    teacher = FlowLM(**{**TINY_FLOW_LM, "num_layers": 4})
    return str(write_export(teacher, tmp_path / "teacher" / "teacher.safetensors"))


def _module(teacher: str, **overrides) -> DistillationModule:
    kwargs = dict(
        teacher=teacher,
        optimizer=functools.partial(torch.optim.AdamW, lr=3e-3),
        num_layers=2,
        cfg_scale=2.0,
        lr_schedule={"warmup_steps": 2},
        ema_decay=0.9,
    )
    return DistillationModule(**{**kwargs, **overrides})


def test_guided_target_and_frozen_heads(exported_teacher, teacher_data):
    module = _module(exported_teacher)
    assert module.layers == [0, 3]
    assert not any(p.requires_grad for p in module.model.head.parameters())
    assert not any(p.requires_grad for p in module.model.out_eos.parameters())
    assert not any(k.startswith("teacher.") for k in module.state_dict())  # teacher kept out of checkpoints
    data = teacher_data()
    data.prepare_data()
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    assert isinstance(batch, TeacherBatch) and batch.voice.shape[0] == batch.text.shape[0] == batch.size
    target, valid = module.guided_target(batch)
    teacher = read_export(exported_teacher).flow_lm
    everything = torch.ones(batch.size, dtype=torch.bool)
    with torch.no_grad():
        z_cond = teacher_forced(teacher, batch)["z"]
        z_null = teacher_forced(teacher, batch, drop_voice=everything, drop_text=everything)["z"]
    torch.testing.assert_close(target[valid], (z_null + 2.0 * (z_cond - z_null))[valid])


def test_init_from_an_earlier_student_keeps_this_teachers_head(exported_teacher, tmp_path):
    """``init_from``: the backbone of an exported student, the head and EOS head of the teacher."""
    torch.manual_seed(2)
    earlier = FlowLM(**TINY_FLOW_LM)  # a 2-layer student of some other teacher
    path = write_export(earlier, tmp_path / "earlier" / "student.safetensors")
    module = _module(exported_teacher, init_from=str(path))
    teacher = read_export(exported_teacher).flow_lm
    own = module.model.state_dict()
    for name, value in earlier.state_dict().items():
        expected = teacher.state_dict()[name] if name.startswith(("head.", "out_eos.")) else value
        torch.testing.assert_close(own[name], expected, msg=name)
    assert not any(p.requires_grad for p in module.model.head.parameters())


def test_context_noise_is_shared_by_both_models_and_off_in_validation(exported_teacher, teacher_data):
    data = teacher_data()
    data.prepare_data()
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    module = _module(exported_teacher, context_noise=0.5).train()
    mask = torch.arange(batch.target.shape[1])[None] < batch.target_lengths[:, None]
    frames = batch.target[mask]
    module.teacher.emb_mean.copy_(frames.mean(0))  # the data's statistics, as `latent_stats: cache` gives
    module.teacher.emb_std.copy_(frames.std(0))
    torch.manual_seed(0)
    noisy = module.noisy_context(batch)
    change = (noisy.target - batch.target)[mask]
    assert change.abs().mean() > 0.05 * batch.target[mask].abs().mean()
    # Normalised (unit variance) latents: sqrt(1-k)·x + sqrt(k)·ε with k <= 0.5 keeps a correlation of
    # E[sqrt(1-k)] >= sqrt(0.5) with the clean latents.
    clean = module.teacher.normalize(batch.target)[mask]
    noised = module.teacher.normalize(noisy.target)[mask]
    assert torch.corrcoef(torch.stack([clean.flatten(), noised.flatten()]))[0, 1] > 0.6
    # The loss is the guided target on the noisy context: student and teacher read the same latents.
    torch.manual_seed(0)
    with torch.no_grad():
        loss = module.loss(batch)
        target, valid = module.guided_target(noisy)
        z = teacher_forced(module.model, noisy)["z"]
    torch.testing.assert_close(loss, (z[valid] - target[valid]).pow(2).mean())
    assert module.eval().noisy_context(batch) is batch
    assert _module(exported_teacher).train().noisy_context(batch) is batch


def test_distillation_lowers_the_loss_and_leaves_the_heads_alone(exported_teacher, teacher_data, tmp_path):
    data = teacher_data()
    data.prepare_data()
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    module = _module(exported_teacher, export_path=str(tmp_path / "export" / "student.safetensors"))
    head_before = {k: v.clone() for k, v in module.model.head.state_dict().items()}
    with torch.no_grad():
        before = module.loss(batch).item()
    loader = torch.utils.data.DataLoader([batch] * 60, batch_size=None)
    cpu_trainer(tmp_path, max_steps=60).fit(module, train_dataloaders=loader)
    with torch.no_grad():
        after = module.loss(batch).item()
    assert after < 0.5 * before, (before, after)
    for name, tensor in module.model.head.state_dict().items():
        assert torch.equal(tensor, head_before[name]), name
    student = read_export(tmp_path / "export" / "student.safetensors").flow_lm
    assert len(student.transformer.layers) == 2


def test_distill_py_student_tiny_runs_end_to_end(exported_teacher, tiny_corpus, tiny_vae, tmp_path):
    vae = tiny_vae.save(tmp_path / "vae.safetensors")
    run_dir = run_stage(
        "distill.py", "student_tiny", tiny_corpus, vae, tmp_path, f"teacher={exported_teacher}"
    )
    assert len(read_export(run_dir / "export" / "student.safetensors").flow_lm.transformer.layers) == 2
    assert (run_dir / "export" / "tokenizer.model").is_file()
    assert {"val/loss", "val/text_progress"} <= logged_columns(run_dir)
    assert (run_dir / "samples" / "step_0000002" / "example0_generated.wav").is_file()


# A small-family student of the 32-wide tiny teacher: its own width, projected grouped-query attention,
# a low-rank text table and a pointwise head; z as wide as the teacher's, so the head can start as the
# teacher's.
SMALL_STUDENT = dict(
    head={"kind": "pointwise", "dim": 32, "depth": 2, "batch_multiplier": 2}, latent_dim=8, d_model=24,
    num_heads=4, num_layers=2, dim_feedforward=48, vocab_size=TINY_VOCAB, attn_dim=32, num_kv_heads=2,
    z_dim=32, text_rank=8,
)  # fmt: skip


def _sample_level(teacher: str, **overrides) -> DistillationModule:
    return _module(teacher, **{"num_layers": None, "student": SMALL_STUDENT, **overrides})


def _first_batch(teacher_data) -> TeacherBatch:
    data = teacher_data()
    data.prepare_data()
    data.setup("fit")
    return next(iter(data.train_dataloader()))


@pytest.fixture
def sampling_teacher(tmp_path) -> str:
    """An exported 4-layer tiny teacher whose head and latent normalisation are not at their (zero /
    identity) initialisation, which would make every sample the noise itself."""
    torch.manual_seed(3)
    teacher = FlowLM(**{**TINY_FLOW_LM, "num_layers": 4})
    with torch.no_grad():
        teacher.emb_mean.normal_()
        teacher.emb_std.uniform_(0.5, 2.0)
        for param in teacher.head.parameters():
            param.normal_(0.0, 0.1)
    return str(write_export(teacher, tmp_path / "sampling_teacher" / "teacher.safetensors"))


def test_a_student_of_its_own_architecture_reads_the_teachers_latents_and_starts_from_its_head(
    sampling_teacher,
):
    path, teacher = sampling_teacher, read_export(sampling_teacher).flow_lm
    student = _sample_level(path, head_from_teacher=True).model
    assert isinstance(student.head, PointwiseHead) and student.z_dim == 32 and student.d_model == 24
    assert all(p.requires_grad for p in student.parameters())  # the head trains too
    torch.testing.assert_close(student.emb_mean, teacher.emb_mean)
    torch.testing.assert_close(student.emb_std, teacher.emb_std)
    assert int(student.stats_updates) == student.stats_ema_steps  # frozen: the teacher's normalisation
    z, noise = torch.randn(5, 32), torch.randn(5, 8)
    torch.testing.assert_close(
        student.head.sample(z, noise), teacher.head.sample(z, noise), atol=1e-5, rtol=1e-5
    )

    with pytest.raises(ValueError, match="z_dim 32"):
        _sample_level(path, head_from_teacher=True, student={**SMALL_STUDENT, "z_dim": 16})
    drifting = {**SMALL_STUDENT, "head": {**SMALL_STUDENT["head"], "kind": "drifting"}}
    with pytest.raises(ValueError, match="pointwise student head"):
        _sample_level(path, head_from_teacher=True, student=drifting)
    with pytest.raises(ValueError, match="vocab_size"):
        _sample_level(path, student={**SMALL_STUDENT, "vocab_size": 64})
    with pytest.raises(ValueError, match="unset num_layers"):
        _sample_level(path, num_layers=2)
    with pytest.raises(ValueError, match="eos_target"):
        _sample_level(path, eos_target="bce")


def test_teacher_and_student_heads_share_the_noise(sampling_teacher, teacher_data):
    """A student that is its teacher (same shape, same weights) at α = 1 matches every sample exactly,
    which it can only do if both heads read the same noise; at α = 2 the guided samples differ."""
    batch = _first_batch(teacher_data)
    twin = {**TINY_FLOW_LM, "num_layers": 4}
    torch.manual_seed(0)
    with torch.no_grad():
        same = _sample_level(sampling_teacher, student=twin, init_from=sampling_teacher, cfg_scale=1.0)
        assert same.losses(batch)["sample"].item() == pytest.approx(0.0, abs=1e-10)
        guided = _sample_level(sampling_teacher, student=twin, init_from=sampling_teacher, cfg_scale=2.0)
        assert guided.losses(batch)["sample"].item() > 1e-6


def test_sample_level_distillation_lowers_the_loss_and_exports_a_student_that_speaks(
    sampling_teacher, teacher_data, tmp_path
):
    batch = _first_batch(teacher_data)
    module = _sample_level(sampling_teacher, export_path=str(tmp_path / "export" / "student.safetensors"))
    teacher_before = {k: v.clone() for k, v in module.teacher.state_dict().items()}
    torch.manual_seed(0)
    with torch.no_grad():
        before = module.losses(batch)
    loader = torch.utils.data.DataLoader([batch] * 25, batch_size=None)
    cpu_trainer(tmp_path, max_steps=25).fit(module, train_dataloaders=loader)
    torch.manual_seed(0)
    with torch.no_grad():
        after = module.losses(batch)
    assert after["sample"] < 0.5 * before["sample"] and after["eos"] < before["eos"], (before, after)
    for name, tensor in module.teacher.state_dict().items():
        assert torch.equal(tensor, teacher_before[name]), name
    student = read_export(tmp_path / "export" / "student.safetensors").flow_lm
    assert isinstance(student.head, PointwiseHead) and student.config["attn_dim"] == 32
    latents = student.generate(None, torch.tensor([1, 2, 3]), SamplingOptions(max_frames=5, seed=0))
    assert latents.shape == (5, 8) and torch.isfinite(latents).all()


def test_the_eos_head_learns_the_teachers_guided_probability_or_the_labels(sampling_teacher, teacher_data):
    batch = _first_batch(teacher_data)
    teacher_module = _sample_level(sampling_teacher)
    labels_module = _sample_level(sampling_teacher, eos_target="labels")
    labels_module.model.load_state_dict(teacher_module.model.state_dict())
    with torch.no_grad():
        guided, valid = teacher_module.guided_target(batch)
        logits = teacher_forced(teacher_module.model, batch)["eos_logits"][valid]
        probability = torch.sigmoid(teacher_module.teacher.out_eos(guided[valid]).squeeze(-1))
        ends = (torch.arange(valid.shape[1])[None] == batch.target_lengths[:, None]).float()[valid]
        soft = torch.nn.functional.binary_cross_entropy_with_logits(logits, probability)
        hard = torch.nn.functional.binary_cross_entropy_with_logits(logits, ends)
        torch.testing.assert_close(teacher_module.losses(batch)["eos"], soft)
        torch.testing.assert_close(labels_module.losses(batch)["eos"], hard)
