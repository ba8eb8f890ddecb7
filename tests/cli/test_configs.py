"""The Hydra config tree composes for every entry point and preset, and every node instantiates."""

import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

from pockettts.data.datamodule import CropDataModule, UtteranceDataModule
from pockettts.models.vae import load_vae
from pockettts.schema import register_schemas
from pockettts.training.checkpoint_io import AtomicCheckpointIO
from pockettts.training.run import build_trainer, instantiate_dict, save_resolved_config
from tests.support import CONFIG_DIR, ROOT

register_schemas()


def _compose(name, tmp_path, overrides=()):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name=name, overrides=list(overrides), return_hydra_config=True)
    # Outside a Hydra run there is no runtime dir: point every path at the test's temp dir.
    with open_dict(cfg):
        cfg.paths.root_dir = str(tmp_path)
        cfg.paths.output_dir = str(tmp_path / "run")
        del cfg["hydra"]
    return cfg


@pytest.mark.parametrize("name", ["train", "distill", "eval", "infer"])
def test_entry_point_configs_compose(name, tmp_path):
    cfg = _compose(name, tmp_path)
    assert cfg.task_name == name
    assert OmegaConf.select(cfg, "paths.output_dir") == str(tmp_path / "run")


@pytest.mark.parametrize(
    "data, cls", [("demo_crops", CropDataModule), ("demo_utterances", UtteranceDataModule)]
)
def test_data_nodes_instantiate(data, cls, tmp_path):
    cfg = _compose("train", tmp_path, [f"data={data}"])
    dm = instantiate(cfg.data)
    assert isinstance(dm, cls)
    assert dm.data_dir == tmp_path / "data" / "demo"
    assert dm.demo.voices[0] == "flite:awb" and dm.demo.pause_range == [0.25, 0.6]


@pytest.mark.parametrize("data", ["manifest_crops", "manifest_utterances"])
def test_own_corpus_data_nodes_instantiate(data, tmp_path):
    cfg = _compose(
        "train",
        tmp_path,
        [f"data={data}", "data.train_manifest=/c/train.jsonl", "data.valid_manifest=/c/valid.jsonl"],
    )
    dm = instantiate(cfg.data)
    assert dm.demo is None and str(dm.train_manifest) == "/c/train.jsonl"


@pytest.mark.parametrize("trainer", ["cpu", "ddp_cpu"])
@pytest.mark.parametrize("logger", ["csv", "wandb", "many"])
@pytest.mark.parametrize("debug", [None, "fdr", "overfit", "limit", "profiler"])
def test_trainer_logger_callbacks_and_debug_presets_instantiate(
    trainer, logger, debug, tmp_path, monkeypatch
):
    monkeypatch.setenv("WANDB_MODE", "offline")
    overrides = [f"trainer={trainer}", f"logger={logger}"] + ([f"debug={debug}"] if debug else [])
    cfg = _compose("train", tmp_path, overrides)
    built = build_trainer(cfg)
    assert isinstance(built, L.Trainer)
    if debug:
        assert built.logger is None and cfg.data.num_workers == 0
    else:
        assert len(built.loggers) == (2 if logger == "many" else 1)
    if debug == "fdr":
        assert built.fast_dev_run
    if debug is None and trainer == "ddp_cpu":
        assert built.num_devices == 2


@pytest.mark.parametrize(
    "trainer, precision, strategy",
    [("gpu", "bf16-mixed", None), ("ddp", "bf16-mixed", "ddp"), ("multinode", "bf16-mixed", "ddp")],
)
def test_gpu_presets_compose(trainer, precision, strategy, tmp_path, monkeypatch):
    # No GPU here: check what they ask for; instantiation needs the hardware.
    monkeypatch.setenv("SLURM_NNODES", "4")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "8")
    cfg = _compose("train", tmp_path, [f"trainer={trainer}"])
    assert cfg.trainer.accelerator == "gpu" and cfg.trainer.precision == precision
    assert cfg.trainer.get("strategy") == strategy
    if trainer == "multinode":
        assert (cfg.trainer.num_nodes, cfg.trainer.devices) == (4, 8)
        assert cfg.trainer.plugins[0]._target_.endswith("SLURMEnvironment")


def test_callbacks_write_checkpoints_into_the_run_dir(tmp_path):
    cfg = _compose("train", tmp_path)
    callbacks = instantiate_dict(cfg.callbacks, "callbacks")
    checkpoint = next(c for c in callbacks if isinstance(c, L.pytorch.callbacks.ModelCheckpoint))
    assert Path(checkpoint.dirpath) == tmp_path / "run" / "checkpoints"


def test_a_callback_set_to_null_is_switched_off(tmp_path):
    def callback_types(overrides):
        trainer = build_trainer(_compose("train", tmp_path, ["callbacks=vae", *overrides]))
        return {cls.__name__ for c in trainer.callbacks for cls in type(c).__mro__}

    assert {"AudioSamplesCallback", "LearningRateMonitor"} <= callback_types([])
    left = callback_types(["callbacks.audio_samples=null", "callbacks.lr_monitor=null"])
    assert "ModelCheckpoint" in left and not {"AudioSamplesCallback", "LearningRateMonitor"} & left


def test_checkpoints_are_written_atomically_locally_and_through_fsspec_remotely(tmp_path, monkeypatch):
    checkpoint_io = build_trainer(_compose("train", tmp_path)).strategy.checkpoint_io
    assert isinstance(checkpoint_io, AtomicCheckpointIO)
    last = tmp_path / "checkpoints" / "last.ckpt"
    checkpoint_io.save_checkpoint({"step": 1}, last)

    def crash(obj, f, *args, **kwargs):  # a kill in the middle of writing the next checkpoint
        Path(f).write_bytes(b"torn")
        raise KeyboardInterrupt

    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(torch, "save", crash)
        checkpoint_io.save_checkpoint({"step": 2}, last)
    assert checkpoint_io.load_checkpoint(last)["step"] == 1
    assert [p.name for p in last.parent.iterdir()] == ["last.ckpt"]
    # Any fsspec URL (s3://, gs://, ...) goes through Lightning's transaction, not the local rename.
    checkpoint_io.save_checkpoint({"step": 3}, "memory://bucket/run/last.ckpt")
    assert checkpoint_io.load_checkpoint("memory://bucket/run/last.ckpt")["step"] == 3


def test_misspelt_keys_fail_loudly(tmp_path):
    with pytest.raises(ConfigCompositionException, match="sede"):
        _compose("train", tmp_path, ["sede=3"])
    # A typo inside an experiment preset (the usual place for one) fails composition too.
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "typo.yaml").write_text("# @package _global_\nsede: 3\n")
    with pytest.raises(ConfigCompositionException, match="sede"):
        _compose("train", tmp_path, [f"hydra.searchpath=[file://{tmp_path}]", "experiment=typo"])
    cfg = _compose("train", tmp_path, ["+data.crop_secnds=2"])
    with pytest.raises(Exception, match="crop_secnds"):
        instantiate(cfg.data)


def test_resolved_config_has_no_interpolations(tmp_path):
    cfg = _compose("train", tmp_path)
    path = save_resolved_config(cfg, tmp_path / "out")
    text = path.read_text()
    assert "${" not in text and str(tmp_path / "data" / "demo") in text


def test_train_without_a_model_exits_with_a_clear_message(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), f"paths.log_dir={tmp_path}", "logger=csv"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode != 0
    assert "no model selected" in result.stderr


@pytest.mark.parametrize(
    "experiment, extra, millions",
    [
        ("vae_tiny", [], 0.84),
        ("vae_speech", ["model.ssl_teacher=null", "model.loss_weights.distillation=0"], 20.06),
        ("teacher_tiny", [], 1.24),
        ("teacher_300m", [], 316.0),  # the released teacher's FlowLM size
    ],
)
def test_experiment_presets_build_their_models(experiment, extra, millions, tmp_path):
    cfg = _compose("train", tmp_path, [f"experiment={experiment}", *extra])
    module = instantiate(cfg.model)
    net = module.vae if hasattr(module, "vae") else module.model
    assert sum(p.numel() for p in net.parameters()) / 1e6 == pytest.approx(millions, rel=0.01)
    if cfg.trainer.accelerator == "cpu":  # the GPU presets are checked by test_gpu_presets_compose
        assert isinstance(instantiate(cfg.trainer), L.Trainer)


def test_decoder_gan_preset_starts_from_the_shipped_codec_with_its_encoder_frozen(tmp_path):
    cfg = _compose("train", tmp_path, ["experiment=vae_tiny_decoder_gan"])
    cfg.paths.root_dir = str(ROOT)  # the shipped codec is in the repository
    module = instantiate(cfg.model)
    shipped = load_vae(ROOT / "recipes" / "tiny" / "checkpoints" / "vae.safetensors")
    audio = torch.randn(1, 1, 1920 * 3) * 0.1
    # The frozen encoder loads plainly: the shipped latents bit for bit.
    assert torch.equal(module.vae.encode(audio), shipped.encode(audio))
    assert not any(p.requires_grad for p in module.vae.encoder_parameters())
    assert module.adversarial_active()


def test_asr_decoder_preset_trains_the_shipped_decoder_on_with_the_whisper_loss(tmp_path, tiny_en):
    from pockettts.losses.asr_perceptual import WhisperFeatureLoss

    cfg = _compose(
        "train", tmp_path, ["experiment=vae_tiny_asr_decoder", f"model.asr_loss.checkpoint={tiny_en[0]}"]
    )
    cfg.paths.root_dir = str(ROOT)
    module = instantiate(cfg.model)
    shipped = load_vae(ROOT / "recipes" / "tiny" / "checkpoints" / "vae.safetensors")
    audio = torch.randn(1, 1, 1920 * 3) * 0.1
    latents = shipped.encode(audio)
    # The whole shipped codec, decoder included, with its encoder frozen.
    assert torch.equal(module.vae.encode(audio), latents)
    torch.testing.assert_close(module.vae.decode(latents), shipped.decode(latents), rtol=1e-5, atol=1e-6)
    assert not any(p.requires_grad for p in module.vae.encoder_parameters())
    assert isinstance(module.asr_loss, WhisperFeatureLoss)
    assert module.loss_weights["asr"] == 1.0 and module.loss_weights["mel"] == 1.0


def test_wide_decoder_preset_keeps_the_shipped_codecs_encoder_under_a_new_decoder(tmp_path):
    cfg = _compose("train", tmp_path, ["experiment=vae_tiny_wide_decoder"])
    cfg.paths.root_dir = str(ROOT)
    module = instantiate(cfg.model)
    shipped = load_vae(ROOT / "recipes" / "tiny" / "checkpoints" / "vae.safetensors")
    audio = torch.randn(1, 1, 1920 * 3) * 0.1
    assert torch.equal(module.vae.encode(audio), shipped.encode(audio))
    assert not any(p.requires_grad for p in module.vae.encoder_parameters())
    # Only the new decoder trains, and it is more than twice vae_tiny's.
    trained = sum(p.numel() for p in module.vae.parameters() if p.requires_grad)
    tiny = instantiate(_compose("train", tmp_path, ["experiment=vae_tiny"]).model.vae)
    frozen = {id(p) for p in tiny.encoder_parameters()}
    tiny_decoder = sum(p.numel() for p in tiny.parameters() if id(p) not in frozen)
    assert module.discriminator is None and trained > 2 * tiny_decoder


@pytest.mark.parametrize("ablation", sorted(p.stem for p in (ROOT / "configs" / "ablation").glob("*.yaml")))
def test_each_ablation_is_one_override(ablation, tmp_path):
    base = _compose("train", tmp_path, ["experiment=teacher_tiny"])
    cfg = _compose("train", tmp_path, ["experiment=teacher_tiny", f"ablation={ablation}"])
    assert OmegaConf.to_container(cfg.model) != OmegaConf.to_container(base.model)
    module = instantiate(cfg.model)
    assert module.model.config == instantiate(cfg.model.model).config


@pytest.mark.parametrize("experiment, layers", [("student_100m", 6), ("student_tiny", 2)])
def test_student_presets_compose_with_full_prefix_prompts(experiment, layers, tmp_path):
    cfg = _compose("distill", tmp_path, [f"experiment={experiment}", "teacher=/models/teacher.safetensors"])
    assert cfg.model.teacher == "/models/teacher.safetensors"
    assert cfg.model.num_layers == layers
    assert cfg.data.cut.max_voice_prompt_sec == 0.0


@pytest.mark.parametrize("name", ["eval", "infer"])
def test_sampling_options_reach_eval_and_infer_whole_with_one_default_each(name, tmp_path):
    """The configs set no sampling knob (``SamplingOptions`` holds the defaults); the command line
    sets any of them under ``sampling.``, and the node converts to the dataclass."""
    from pockettts.models.sampling import SamplingOptions

    assert OmegaConf.to_object(_compose(name, tmp_path).sampling) == SamplingOptions()
    cfg = _compose(name, tmp_path, ["sampling.temperature=0.5", "sampling.cfg_scale=2"])
    assert OmegaConf.to_object(cfg.sampling) == SamplingOptions(cfg_scale=2.0, temperature=0.5)


def test_speech_samples_are_drawn_with_sampling_options(tmp_path):
    from pockettts.models.sampling import SamplingOptions

    teacher = instantiate(_compose("train", tmp_path, ["callbacks=teacher"]).callbacks.speech_samples)
    assert teacher.sampling == SamplingOptions(cfg_scale=2.0)
    student = _compose("distill", tmp_path, ["experiment=student_tiny", "teacher=t.safetensors"])
    assert instantiate(student.callbacks.speech_samples).sampling == SamplingOptions()


def test_export_checkpoint_exports_a_codec_run_and_refuses_other_modules(tmp_path):
    """A codec run's checkpoint exports its EMA codec, as the end of training would; a module that
    trains neither a FlowLM nor a codec is refused before its checkpoint is read."""
    from pockettts.training.export_checkpoint import export_checkpoint

    cfg = _compose("train", tmp_path, ["experiment=vae_tiny"])
    run = save_resolved_config(cfg, tmp_path / "run").parent
    module = instantiate(cfg.model)
    with torch.no_grad():
        for param in module.vae.parameters():
            param.add_(0.01)  # raw weights off the EMA shadow: the export must be the EMA
    state = {"state_dict": module.state_dict(), "global_step": 2}
    module.on_save_checkpoint(state)
    checkpoint = run / "checkpoints" / "step_0000002.ckpt"
    checkpoint.parent.mkdir()
    torch.save(state, checkpoint)
    exported = export_checkpoint(checkpoint)
    assert exported == run / "export" / "step_0000002" / "vae.safetensors"
    expected = module.export(tmp_path / "direct.safetensors")
    for (name, value), (_, wanted) in zip(
        load_vae(exported).state_dict().items(), load_vae(expected).state_dict().items(), strict=True
    ):
        assert torch.equal(value, wanted), name

    other = tmp_path / "other"
    save_resolved_config(OmegaConf.create({"model": {"_target_": "torch.nn.Linear", "in_features": 1,
                                                     "out_features": 1}}), other)  # fmt: skip
    (other / "checkpoints").mkdir()
    (other / "checkpoints" / "last.ckpt").write_bytes(b"")  # refused before it is read
    with pytest.raises(ValueError, match="Linear trains neither a FlowLM nor a codec"):
        export_checkpoint(other / "checkpoints" / "last.ckpt")
    assert not (other / "export").exists()
