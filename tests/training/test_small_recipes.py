"""The 2026-10 small models' recipes: a light decoder on a frozen codec's latents, a small backbone
trained from scratch, and a small student distilled at the sample level. Their full-size presets build
pocket-tts 4.0.1's shapes (parameter for parameter), and their tiny presets run end to end."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from pockettts.models.bundle import read_export, write_export
from pockettts.models.flow_lm import FlowLM
from pockettts.models.heads import DriftingHead, PointwiseHead
from pockettts.models.vae import DECODER_SIDE, AudioVAE, load_vae, vae_latent_hash
from pockettts.training.distill_module import student_of_own_architecture
from tests.support import (
    ROOT,
    TINY_VOCAB,
    compose_experiment,
    cpu_trainer,
    logged_columns,
    run_stage,
    run_vae_stage,
    speak_from_export,
    tiny_teacher_module,
)

SHIPPED = ROOT / "recipes" / "tiny" / "checkpoints"

# pocket-tts 4.0.1's own modules built from its configs english_{18m,7m,2m}_2026-10.yaml (FlowLMModel with
# the speaker projection TTSModel adds; the decoder side of build_mimi's codec), counted parameter by
# parameter; the configs' headers round them to 15.6M / 4.3M / 0.9M and 2.6M / 2.6M / 1.0M.
PACKAGE_FLOW_LM = {"18m": 15_556_737, "7m": 4_245_345, "2m": 881_137}
PACKAGE_DECODER = {"18m": 2_617_233, "7m": 2_617_233, "2m": 1_041_709}
HEAD_KIND = {"18m": DriftingHead, "7m": DriftingHead, "2m": PointwiseHead}


def _flow_lm(node) -> FlowLM:
    arguments = OmegaConf.to_container(node, resolve=True)
    arguments.pop("_target_", None)
    return FlowLM(**arguments)


def _parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("size", list(PACKAGE_FLOW_LM))
def test_the_teacher_and_student_presets_build_the_packages_flow_lm(size):
    teacher = compose_experiment("train", f"teacher_{size}")
    student = compose_experiment("distill", f"student_{size}")
    assert student.model.student == OmegaConf.masked_copy(teacher.model.model, list(student.model.student))
    model = _flow_lm(teacher.model.model)
    assert _parameters(model) == PACKAGE_FLOW_LM[size]
    assert isinstance(model.head, HEAD_KIND[size]) and model.z_dim == 64
    # the student keeps the open recipe's distillation, its own architecture replacing the layer copy
    reference = compose_experiment("distill", "student_100m").model
    assert student.model.num_layers is None and reference.num_layers == 6
    assert (student.model.cfg_scale, student.model.optimizer.lr) == (
        reference.cfg_scale,
        reference.optimizer.lr,
    )
    assert student.callbacks.speech_samples.sampling.cfg_scale == 1.0  # guidance baked in


@pytest.mark.parametrize("size", list(PACKAGE_DECODER))
def test_the_light_decoder_presets_build_the_packages_decoder_on_the_full_encoder(size):
    cfg = compose_experiment("train", f"vae_light_decoder_{size}")
    arguments = {**OmegaConf.to_container(cfg.model.vae), "weight_norm": False}
    arguments.pop("_target_")
    vae = AudioVAE(**arguments)
    decoder = sum(_parameters(vae.get_submodule(name)) for name in DECODER_SIDE)
    assert decoder == PACKAGE_DECODER[size]
    full = compose_experiment("train", "vae_speech").model.vae
    assert (cfg.model.vae.seanet, cfg.model.vae.transformer) == (full.seanet, full.transformer)
    model = OmegaConf.to_container(cfg.model)  # unresolved: paths need a Hydra run
    assert (model["init_decoder"], model["train_encoder"], model["ssl_teacher"]) == (False, False, None)
    assert model["init_from"].endswith("/checkpoints/kyutai_vae.safetensors")  # the released full codec
    assert model["teacher_codec"] == "${.init_from}" and model["loss_weights"]["teacher_mel"] > 0


def test_the_tiny_presets_fit_the_shipped_checkpoints():
    """vae_light_decoder_tiny decodes the shipped codec's latents with an eighth of its decoder, and
    student_small_tiny's head starts as the shipped teacher's one-step sampler."""
    light = OmegaConf.to_container(compose_experiment("train", "vae_light_decoder_tiny").model)
    assert light["init_from"].endswith("/recipes/tiny/checkpoints/vae.safetensors")
    assert light["teacher_codec"] == "${.init_from}" and light["vae"]["decoder_seanet"]["kernel_size"] == 3
    shipped_codec = load_vae(SHIPPED / "vae.safetensors")
    light["vae"].pop("_target_")
    vae = AudioVAE(**light["vae"])
    vae.load_inference_state_dict(shipped_codec.inference_state_dict(), encoder_only=True)
    sizes = [sum(_parameters(v.get_submodule(n)) for n in DECODER_SIDE) for v in (vae, shipped_codec)]
    assert sizes[0] < sizes[1] / 8

    distill = OmegaConf.to_container(compose_experiment("distill", "student_small_tiny"))
    assert distill["teacher"].endswith("/recipes/tiny/checkpoints/teacher.safetensors")
    assert distill["model"]["head_from_teacher"]
    teacher = read_export(SHIPPED / "teacher.safetensors").flow_lm
    student = student_of_own_architecture(teacher, distill["model"]["student"], head_from_teacher=True)
    assert student.config["attn_dim"] == 128 and student.d_model < teacher.d_model
    z, noise = torch.randn(4, teacher.z_dim), torch.randn(4, teacher.latent_dim)
    from_teacher = teacher.head.sample(z, noise)
    torch.testing.assert_close(student.head.sample(z, noise), from_teacher, atol=1e-5, rtol=1e-5)


def test_a_small_family_backbone_learns_from_scratch(teacher_data, tmp_path):
    """teacher_small_tiny's parts at test width (grouped-query attention of another width than the
    residual stream, a low-rank text table, the z bottleneck, the pointwise head) lower the loss."""
    data = teacher_data()
    data.prepare_data()
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    small = compose_experiment("train", "teacher_small_tiny").model.model
    torch.manual_seed(0)
    model = FlowLM(head=dict(small.head, dim=32), latent_dim=8, d_model=24, num_heads=4, num_layers=2,
                   dim_feedforward=48, vocab_size=TINY_VOCAB, attn_dim=32, num_kv_heads=2, z_dim=16,
                   text_rank=8)  # fmt: skip
    module = tiny_teacher_module(model=model)
    module.model.set_latent_statistics(batch.target.mean((0, 1)), batch.target.std((0, 1)))

    def loss() -> float:
        torch.manual_seed(1)
        with torch.no_grad():
            return module.losses(batch, dropout=False)["loss"].item()

    before = loss()
    loader = torch.utils.data.DataLoader([batch] * 25, batch_size=None)
    cpu_trainer(tmp_path, max_steps=25).fit(module, train_dataloaders=loader)
    after = loss()
    assert after < before - 0.05 * abs(before), (before, after)  # measured: 3.80 -> 3.50


@pytest.mark.slow  # train.py on the shipped codec: ≈ 25 s of CPU
def test_vae_light_decoder_tiny_trains_and_exports_a_codec_of_the_same_latents(tiny_corpus, tmp_path):
    run_dir = tmp_path / "run"
    extra = (f"paths.root_dir={ROOT}", "trainer.log_every_n_steps=1")  # where the shipped codec is
    result = run_vae_stage("vae_light_decoder_tiny", tiny_corpus, run_dir, *extra)
    assert result.returncode == 0, result.stderr[-3000:]
    export = run_dir / "export" / "vae.safetensors"
    assert vae_latent_hash(export) == vae_latent_hash(SHIPPED / "vae.safetensors")
    assert load_vae(export).config["decoder_transformer"]["d_model"] == 64
    assert {"train/teacher_mel", "val/teacher_mel_distance"} <= logged_columns(run_dir)


@pytest.mark.slow  # a train.py and a distill.py process: ≈ 35 s of CPU
def test_a_tiny_small_model_trains_from_scratch_and_a_student_distils_from_an_lsd_teacher(
    tiny_corpus, tiny_vae, tmp_path
):
    vae = tiny_vae.save(tmp_path / "vae.safetensors")
    scratch_dir, student_dir = tmp_path / "scratch", tmp_path / "student"
    for folder in (scratch_dir, student_dir):
        folder.mkdir()
    small = (
        f"model.model.vocab_size={TINY_VOCAB}",
        "model.model.latent_dim=8",
        "trainer.log_every_n_steps=1",
    )
    scratch_run = run_stage("train.py", "teacher_small_tiny", tiny_corpus, vae, scratch_dir, *small)
    scratch = read_export(scratch_run / "export" / "teacher.safetensors").flow_lm
    assert isinstance(scratch.head, PointwiseHead) and scratch.z_proj is not None
    assert scratch.conditioner.proj is not None and scratch.config["num_kv_heads"] == 2
    assert {"train/head/fidelity", "train/head/diversity"} <= logged_columns(scratch_run)
    speak_from_export(scratch_run / "export" / "teacher.safetensors", tiny_corpus)

    # An LSD teacher as wide as the shipped one (128, head 128 x 3), so the student's head starts as its own.
    torch.manual_seed(0)
    lsd = FlowLM(head={"kind": "lsd", "dim": 128, "depth": 3}, latent_dim=8, d_model=128, num_heads=4,
                 num_layers=2, dim_feedforward=256, vocab_size=TINY_VOCAB)  # fmt: skip
    teacher = write_export(lsd, tmp_path / "lsd" / "teacher.safetensors")
    student_args = (f"teacher={teacher}", f"model.student.vocab_size={TINY_VOCAB}",
                    "model.student.latent_dim=8", "trainer.log_every_n_steps=1")  # fmt: skip
    student_run = run_stage("distill.py", "student_small_tiny", tiny_corpus, vae, student_dir, *student_args)
    student_export = student_run / "export" / "student.safetensors"
    student = read_export(student_export).flow_lm
    assert isinstance(student.head, PointwiseHead) and student.z_dim == 128 and student.d_model == 96
    assert {"train/sample", "train/eos", "val/sample"} <= logged_columns(student_run)
    speak_from_export(student_export, tiny_corpus)
