"""Stage-1 training: a GAN step on CPU, overfitting lowers the loss, exact resume, the NaN guard,
distillation from a (tiny, local) WavLM, and ``train.py experiment=vae_tiny`` end to end."""

from __future__ import annotations

import functools
from pathlib import Path

import lightning as L
import pytest
import torch
import torchaudio
from torch.utils.data import DataLoader

from pockettts.data.datamodule import CropDataModule
from pockettts.losses.spectral import MultiScaleMelLoss
from pockettts.models.vae import AudioVAE, load_vae, vae_latent_hash
from pockettts.modules.discriminators import (
    CombinedDiscriminator,
    MultiPeriodDiscriminator,
    MultiScaleSTFTDiscriminator,
)
from pockettts.training.vae_module import VAETrainingModule
from tests.support import TINY_VAE, TINY_WAVLM, Crash, amplify_codec, cpu_trainer, run_vae_stage
from tests.support import crash_after as crash_after_step


def _module(seed: int = 0, **overrides) -> VAETrainingModule:
    torch.manual_seed(seed)
    discriminator = CombinedDiscriminator(
        [
            MultiScaleSTFTDiscriminator(n_ffts=(256, 128), channels=4),
            MultiPeriodDiscriminator(periods=(2, 3), channels=(4, 8, 8, 8, 8)),
        ]
    )
    kwargs = dict(
        vae=AudioVAE(**TINY_VAE),
        discriminator=discriminator,
        generator_optimizer=functools.partial(torch.optim.AdamW, lr=3e-3, betas=(0.8, 0.99)),
        discriminator_optimizer=functools.partial(torch.optim.AdamW, lr=1e-3, betas=(0.8, 0.99)),
        loss_weights=dict(adversarial=1.0, feature_matching=2.0, kl=0.01, mel=1.0),
        mel_loss=MultiScaleMelLoss(n_ffts=(64, 256, 1024), n_mels=(10, 40, 80)),
        adversarial_warmup_steps=0,
        ema_decay=0.9,
    )
    kwargs.update(overrides)
    return VAETrainingModule(**kwargs)


def _crops(corpus: Path, **kwargs) -> CropDataModule:
    return CropDataModule(
        data_dir=str(corpus),
        train_manifest="train.jsonl",
        valid_manifest="valid.jsonl",
        crop_seconds=0.32,
        valid_crop_seconds=0.64,
        batch_size=2,
        num_workers=0,
        seed=3,
        **kwargs,
    )


def _params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_one_gan_step_updates_generator_discriminator_and_ema(tiny_corpus, tmp_path):
    module = _module(export_path=str(tmp_path / "export" / "vae.safetensors"))
    before_g, before_d = _params(module.vae), _params(module.discriminator)
    trainer = cpu_trainer(tmp_path, max_steps=1)
    trainer.fit(module, datamodule=_crops(tiny_corpus))
    assert trainer.global_step == 1  # one generator update, the discriminator's not counted
    changed = lambda before, now: any(not torch.equal(before[k], now[k]) for k in before)  # noqa: E731
    assert changed(before_g, _params(module.vae)) and changed(before_d, _params(module.discriminator))
    for term in ("adversarial", "feature_matching", "kl", "mel", "discriminator", "loss"):
        assert torch.isfinite(trainer.callback_metrics[f"train/{term}"])
    assert "latent/input_dependence" in trainer.callback_metrics
    # The export holds the EMA weights, folded, and reloads as a plain model.
    exported = load_vae(tmp_path / "export" / "vae.safetensors")
    audio = torch.randn(1, 1, 1920 * 3) * 0.1
    torch.testing.assert_close(
        exported.decode_features(exported.encode_mean(audio)), module.reconstruct(audio)
    )
    with module.ema.averaged(module.vae):
        shadow_out = module.vae.encode(audio)
    assert not torch.allclose(shadow_out, module.vae.encode(audio))  # EMA differs from the raw weights


def test_adversarial_warmup_keeps_the_discriminator_still(tiny_corpus, tmp_path):
    module = _module(adversarial_warmup_steps=5)
    before = _params(module.discriminator)
    cpu_trainer(tmp_path, max_steps=2).fit(module, datamodule=_crops(tiny_corpus))
    assert all(torch.equal(before[k], v) for k, v in _params(module.discriminator).items())


def test_overfitting_a_few_clips_lowers_the_reconstruction_loss(tiny_corpus, tmp_path):
    datamodule = _crops(tiny_corpus)
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    module = _module(discriminator=None, discriminator_optimizer=None, loss_weights=dict(mel=1.0, kl=1e-4))
    mel = module.mel_loss
    with torch.no_grad():
        initial = mel(module.vae(batch["audio"], sample=False)["reconstruction"], batch["audio"]).item()
    loader = DataLoader([batch] * 60, batch_size=None)
    cpu_trainer(tmp_path, max_steps=60).fit(module, train_dataloaders=loader)
    with torch.no_grad():
        final = mel(module.vae(batch["audio"], sample=False)["reconstruction"], batch["audio"]).item()
    assert final < 0.7 * initial, (initial, final)


def test_resume_after_a_crash_continues_exactly(tiny_corpus, tmp_path):
    def run(folder: Path, crash_after: int | None = None, ckpt_path: str | None = None) -> VAETrainingModule:
        module = _module(seed=0, adversarial_warmup_steps=2)
        callbacks = [
            L.pytorch.callbacks.ModelCheckpoint(
                dirpath=folder, every_n_train_steps=3, save_top_k=-1, filename="{step}"
            )
        ]
        if crash_after:
            callbacks.append(crash_after_step(crash_after))
        trainer = cpu_trainer(folder, max_steps=7, callbacks=callbacks, enable_checkpointing=True)
        trainer.fit(module, datamodule=_crops(tiny_corpus), ckpt_path=ckpt_path)
        return module

    straight = run(tmp_path / "straight")
    with pytest.raises(Crash):
        run(tmp_path / "crashed", crash_after=4)
    resumed = run(tmp_path / "resumed", ckpt_path=str(tmp_path / "crashed" / "step=3.ckpt"))
    for name, tensor in _params(straight).items():
        assert torch.equal(tensor, _params(resumed)[name]), name
    for name, tensor in straight.ema.shadow.items():
        assert torch.equal(tensor, resumed.ema.shadow[name]), name


class _NaNAudio(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 100

    def __getitem__(self, index: int) -> dict:
        audio = torch.full((1, 1920 * 2), float("nan")) if index >= 1 else torch.randn(1, 1920 * 2) * 0.1
        return {"audio": audio}


def test_non_finite_steps_are_skipped_then_fail_with_a_clear_message(tmp_path):
    module = _module(
        discriminator=None, discriminator_optimizer=None, loss_weights=dict(mel=1.0), max_bad_steps=3
    )
    loader = DataLoader(_NaNAudio(), batch_size=1)
    trainer = cpu_trainer(tmp_path, max_steps=50)
    with pytest.raises(RuntimeError, match=r"4 non-finite steps in a row at step 1 \(generator loss is nan"):
        trainer.fit(module, train_dataloaders=loader)
    assert module.guard.skipped == 4
    assert all(torch.isfinite(p).all() for p in module.vae.parameters())


def test_distillation_from_a_local_wavlm_checkpoint(tiny_corpus, tmp_path):
    path = tmp_path / "wavlm_tiny.pt"
    torch.save(torchaudio.models.wavlm_model(**TINY_WAVLM).state_dict(), path)
    teacher = dict(checkpoint=str(path), architecture="custom", **TINY_WAVLM)
    module = _module(loss_weights=dict(kl=0.01, distillation=25.0, adversarial=1.0), ssl_teacher=teacher)
    cpu_trainer(tmp_path, max_steps=1).fit(module, datamodule=_crops(tiny_corpus))
    assert not any(k.startswith("ssl_teacher") for k in module.state_dict())  # frozen WavLM not saved
    assert any(k.startswith("distillation.proj") for k in module.state_dict())


def test_decoder_only_fine_tune_keeps_the_latents(tiny_corpus, tmp_path):
    """``train_encoder=False`` after ``init_from``: the exported codec encodes exactly as the one it
    started from (latent caches and backbones stay valid) while its decoder has been trained."""
    start = tmp_path / "start.safetensors"
    _module(seed=1).export(start)
    module = _module(init_from=str(start), train_encoder=False, export_path=str(tmp_path / "ft.safetensors"))
    encoder_ids = {id(p) for p in module.vae.encoder_parameters()}
    assert encoder_ids and all(not p.requires_grad for p in module.vae.encoder_parameters())
    assert set(module.ema.shadow) == {
        n for n, p in module.vae.named_parameters() if id(p) not in encoder_ids
    }  # the EMA averages the decoder side only
    cpu_trainer(tmp_path, max_steps=3).fit(module, datamodule=_crops(tiny_corpus))
    before, after = load_vae(start), load_vae(tmp_path / "ft.safetensors")
    audio = torch.randn(2, 1, 1920 * 4) * 0.1
    # Bit for bit (the frozen encoder drops weight norm), so caches keyed by the latent hash stay.
    assert torch.equal(after.encode(audio), before.encode(audio))
    assert vae_latent_hash(tmp_path / "ft.safetensors") == vae_latent_hash(start)
    latents = before.encode(audio)
    assert not torch.allclose(after.decode(latents), before.decode(latents), atol=1e-4)


def test_a_decoder_only_run_loads_a_checkpoint_with_a_weight_normalised_encoder():
    """A decoder-only checkpoint whose frozen encoder is weight-normalised loads into a plain frozen
    encoder (the weight-norm pairs folded), strictly, with the same weights."""
    old = _module(seed=2)  # weight norm everywhere
    checkpoint = {"state_dict": old.state_dict(), "global_step": 3}
    old.on_save_checkpoint(checkpoint)
    new = _module(seed=5, train_encoder=False)
    assert not any("parametrizations" in k for k in new.vae.state_dict() if k.startswith("encoder."))
    new.on_load_checkpoint(checkpoint)
    new.load_state_dict(checkpoint["state_dict"])
    got, wanted = new.vae.inference_state_dict(), old.vae.inference_state_dict()
    assert got.keys() == wanted.keys()
    for name in got:
        torch.testing.assert_close(got[name], wanted[name], rtol=0, atol=1e-6, msg=name)


def test_a_wider_decoder_trains_on_a_frozen_codecs_latents(tiny_corpus, tmp_path):
    """``init_decoder=False``: the encoder side comes from ``init_from`` (the latents stay that
    codec's), the decoder is new and of another width, and the export reloads as such."""
    start = tmp_path / "start.safetensors"
    _module(seed=1).export(start)
    wider = dict(TINY_VAE, decoder_seanet=dict(dimension=32, n_filters=8))
    module = _module(
        vae=AudioVAE(**wider),
        init_from=str(start),
        init_decoder=False,
        train_encoder=False,
        export_path=str(tmp_path / "wide.safetensors"),
    )
    cpu_trainer(tmp_path, max_steps=2).fit(module, datamodule=_crops(tiny_corpus))
    before, after = load_vae(start), load_vae(tmp_path / "wide.safetensors")
    audio = torch.randn(2, 1, 1920 * 4) * 0.1
    assert torch.equal(after.encode(audio), before.encode(audio))
    assert vae_latent_hash(tmp_path / "wide.safetensors") == vae_latent_hash(start)
    assert (
        after.config["decoder_seanet"]["n_filters"] == 8 and before.config["decoder_seanet"]["n_filters"] == 4
    )
    assert after.decode(before.encode(audio)).shape == audio.shape
    # Loading the whole source codec into the wider model is refused, naming the misfit.
    with pytest.raises(RuntimeError, match="size mismatch"):
        _module(vae=AudioVAE(**wider), init_from=str(start))
    with pytest.raises(ValueError, match="set init_from"):
        _module(init_decoder=False)


LIGHT_DECODER = dict(
    decoder_seanet=dict(dimension=8, n_filters=2, kernel_size=3),
    decoder_transformer=dict(d_model=8, num_heads=2, dim_feedforward=16),
)


def _teacher_mel(module: VAETrainingModule, audio: torch.Tensor) -> float:
    """The ``teacher_mel`` term on the posterior means of ``audio`` ``[B, 1, T]``, current weights."""
    with torch.no_grad():
        mean = module.vae.encode_mean(audio)
        decoded = module.vae.decode_features(mean)[..., : audio.shape[-1]]
        return module.mel_loss(decoded, module.teacher_decoding(mean, audio)).item()


def test_a_light_decoder_learns_to_decode_as_its_teacher_codec(tiny_corpus, tmp_path):
    """``teacher_codec``: a new, smaller decoder on a frozen codec's latents learns what that codec's
    own decoder makes of the same latents (the ``teacher_mel`` term); the teacher stays out of the
    checkpoints and the export keeps the codec's latent space."""
    teacher = tmp_path / "teacher.safetensors"
    _module(seed=1).export(teacher)
    for _ in range(2):  # x1600: peaks near -27 dBFS, loud enough for the mel term to have a target
        amplify_codec(teacher)
    module = _module(
        vae=AudioVAE(**TINY_VAE, **LIGHT_DECODER),
        discriminator=None,
        discriminator_optimizer=None,
        loss_weights=dict(teacher_mel=1.0),
        init_from=str(teacher),
        init_decoder=False,
        train_encoder=False,
        teacher_codec=str(teacher),
        sample_posterior=False,  # the random codec's latents are 25x smaller than its posterior noise
        export_path=str(tmp_path / "light.safetensors"),
    )
    data = _crops(tiny_corpus)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    before = _teacher_mel(module, batch["audio"])
    loader = DataLoader([batch] * 40, batch_size=None)
    cpu_trainer(tmp_path, max_steps=40).fit(module, train_dataloaders=loader)
    assert _teacher_mel(module, batch["audio"]) < 0.5 * before
    assert not any(k.startswith("teacher") for k in module.state_dict())
    light = load_vae(tmp_path / "light.safetensors")
    assert vae_latent_hash(tmp_path / "light.safetensors") == vae_latent_hash(teacher)
    assert light.config["decoder_seanet"]["kernel_size"] == 3 and light.config["seanet"]["kernel_size"] == 7


def test_a_teacher_codec_must_share_the_latent_space(tmp_path):
    teacher, stranger = tmp_path / "teacher.safetensors", tmp_path / "stranger.safetensors"
    _module(seed=1).export(teacher)
    _module(seed=2).export(stranger)
    light = dict(init_from=str(teacher), init_decoder=False, discriminator=None, discriminator_optimizer=None)
    with pytest.raises(ValueError, match="another encoder side"):
        _module(train_encoder=False, teacher_codec=str(stranger), loss_weights=dict(teacher_mel=1.0), **light)
    with pytest.raises(ValueError, match="train_encoder=False"):
        _module(teacher_codec=str(teacher), loss_weights=dict(teacher_mel=1.0), **light)
    with pytest.raises(ValueError, match="needs a teacher_codec"):
        _module(train_encoder=False, loss_weights=dict(teacher_mel=1.0), **light)


def test_misconfigured_losses_are_named():
    with pytest.raises(ValueError, match="unknown loss terms"):
        _module(loss_weights=dict(melspec=1.0))
    with pytest.raises(ValueError, match="need a discriminator"):
        _module(discriminator=None)
    with pytest.raises(ValueError, match="ssl_teacher"):
        _module(loss_weights=dict(distillation=1.0))
    with pytest.raises(ValueError, match="train_encoder=True"):
        _module(loss_weights=dict(distillation=1.0), ssl_teacher={}, train_encoder=False)


def test_train_py_vae_tiny_runs_end_to_end(tiny_corpus, tmp_path):
    """The real entry point and preset: trains, validates, writes samples, checkpoints and the export."""
    run_dir = tmp_path / "run"
    result = run_vae_stage("vae_tiny", tiny_corpus, run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert load_vae(run_dir / "export" / "vae.safetensors").latent_dim == 32
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert not list((run_dir / "checkpoints").glob("*.tmp*"))  # atomic_write's staging files
    assert (run_dir / "samples" / "step_0000002" / "clip0_reconstruction.wav").is_file()
    assert (run_dir / "samples" / "step_0000002" / "clip0.png").is_file()
    assert (run_dir / "config.yaml").is_file()


@pytest.mark.slow
def test_gan_training_runs_under_ddp_with_two_processes(tiny_corpus, tmp_path):
    """Two gloo processes: each network's step leaves the other's parameters gradient-free, which
    DDP only accepts with unused-parameter detection (the strategy vae_speech sets)."""
    run_dir = tmp_path / "ddp"
    result = run_vae_stage(
        "vae_tiny",
        tiny_corpus,
        run_dir,
        "trainer=ddp_cpu",
        "trainer.strategy=ddp_find_unused_parameters_true",
        "model.adversarial_warmup_steps=0",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert load_vae(run_dir / "export" / "vae.safetensors").latent_dim == 32
