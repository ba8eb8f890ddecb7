"""Stage-2 training of the teacher on the tiny corpus: a loss that goes down, the guided-attention
term, seeded validation with the text gain, steps counted under gradient accumulation, exact
resume, a named vocabulary mismatch, and ``train.py experiment=teacher_tiny`` end to end."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import pytest
import torch

from pockettts.models.bundle import read_export
from pockettts.models.flow_lm import FlowLM
from pockettts.training.teacher_module import TeacherTrainingModule
from tests.support import (
    TINY_FLOW_LM,
    TINY_VOCAB,
    Crash,
    cpu_trainer,
    logged_columns,
    run_stage,
    tiny_teacher_module,
)
from tests.support import crash_after as crash_after_step


def test_overfitting_one_batch_lowers_the_loss(teacher_data, tmp_path):
    data = teacher_data()
    data.prepare_data()
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    module = tiny_teacher_module(text_dropout=0.0, voice_dropout=0.0)
    module.model.set_latent_statistics(**{k: v for k, v in data.cache.stats().items()})
    module.model.eval()
    with torch.no_grad():
        before = module.losses(batch, dropout=False)["loss"].item()
    loader = torch.utils.data.DataLoader([batch] * 80, batch_size=None)
    cpu_trainer(tmp_path, max_steps=80).fit(module, train_dataloaders=loader)
    module.model.eval()
    with torch.no_grad():
        after = module.losses(batch, dropout=False)["loss"].item()
    assert after < 0.6 * before, (before, after)


def test_guided_attention_pulls_the_chosen_heads_to_the_diagonal(teacher_data, tmp_path):
    """``guided_attention``: the guide term is part of the training loss only (validation losses stay
    comparable), skips rows whose text was dropped, and training on it lowers it."""
    data = teacher_data()
    data.prepare_data()
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    options = {"weight": 1.0, "sigma": 0.2, "layers": [1], "heads": 2}
    module = tiny_teacher_module(text_dropout=0.0, voice_dropout=0.0, guided_attention=options)
    module.model.set_latent_statistics(**data.cache.stats())
    with torch.no_grad():
        before = module.losses(batch, dropout=True, guide=True)
        assert "guide" not in module.losses(batch, dropout=False)
        assert module.losses(batch, dropout=False, without_text=True, guide=True)["guide"] == 0
    assert before["loss"] == pytest.approx((before["head"] + 0.1 * before["eos"] + before["guide"]).item())
    loader = torch.utils.data.DataLoader([batch] * 30, batch_size=None)
    cpu_trainer(tmp_path, max_steps=30).fit(module, train_dataloaders=loader)
    with torch.no_grad():
        after = module.losses(batch, dropout=True, guide=True)["guide"]
    assert after < 0.7 * before["guide"], (before["guide"], after)
    with pytest.raises(ValueError, match="do not fit a model of 2 layers"):
        tiny_teacher_module(guided_attention={"layers": [2]})
    with pytest.raises(ValueError, match="unknown guided_attention options"):
        tiny_teacher_module(guided_attention={"sigmas": 0.1})
    assert tiny_teacher_module(guided_attention={"weight": 0.5}).guided_attention == {
        "weight": 0.5, "sigma": 0.2, "layers": [1], "heads": TINY_FLOW_LM["num_heads"]}  # fmt: skip


def test_validation_is_seeded_and_reports_what_the_text_is_worth(teacher_data):
    data = teacher_data()
    data.prepare_data()
    data.setup("fit")
    batch = next(iter(data.val_dataloader()))
    module = tiny_teacher_module().eval()
    with torch.no_grad():  # AdaLN-zero: at init the head ignores z, so nothing could depend on the text
        for parameter in module.model.head.parameters():
            parameter.normal_(0.0, 0.2)
    logged = []
    module.log_dict = lambda metrics, **kwargs: logged.append(metrics)
    module.reset_text_progress()
    with torch.no_grad():
        module.validation_step(batch, 0)
        module.validation_step(batch, 0)
        torch.manual_seed(0)
        with_text = module.losses(batch, dropout=False)["head"]
        torch.manual_seed(0)
        without_text = module.losses(batch, dropout=False, without_text=True)["head"]
    assert logged[0] == logged[1]  # the head's random draws are seeded: repeatable curves
    first = logged[0]
    assert set(first) >= {"val/loss", "val/head", "val/eos", "val/text_gain"}
    torch.testing.assert_close(first["val/text_gain"], (without_text - with_text).float())
    assert first["val/text_gain"] != 0  # removing the text changes the prediction


def test_logged_curves_count_optimizer_steps_when_accumulating(teacher_data, tmp_path):
    module = tiny_teacher_module()
    module.accumulate_grad_batches = 2
    logger = L.pytorch.loggers.CSVLogger(tmp_path, name="csv", version=0)
    trainer = cpu_trainer(
        tmp_path, max_steps=3, logger=logger, log_every_n_steps=1, limit_val_batches=1, val_check_interval=4
    )
    trainer.fit(module, datamodule=teacher_data(max_frames=600))  # 300 frames per micro-batch
    assert trainer.global_step == 3
    rows = list(csv.DictReader((tmp_path / "csv" / "version_0" / "metrics.csv").open()))
    train_steps = [int(r["step"]) for r in rows if r.get("train/loss")]
    assert len(train_steps) == 6 and sorted(set(train_steps)) == [0, 1, 2, 3]  # 2 micro-batches a step
    assert [int(r["step"]) for r in rows if r.get("val/loss")] == [2]  # after 4 micro-batches


def test_a_validation_between_micro_batches_leaves_the_step_unchanged(teacher_data, tmp_path):
    """``val_check_interval`` counts micro-batches, and Lightning frees the gradients before it
    validates: a validation after the first of a step's two micro-batches must not drop them."""
    weights = {}
    for name, validation in (("plain", {}), ("validated", dict(limit_val_batches=1, val_check_interval=3))):
        module = tiny_teacher_module()
        module.accumulate_grad_batches = 2
        cpu_trainer(tmp_path / name, max_steps=3, **validation).fit(
            module, datamodule=teacher_data(max_frames=600)
        )
        weights[name] = module.model.state_dict()
    for key, value in weights["plain"].items():
        assert torch.equal(value, weights["validated"][key]), key


def test_resume_after_a_crash_continues_exactly(teacher_data, tmp_path):
    def run(
        folder: Path, crash_after: int | None = None, ckpt_path: str | None = None
    ) -> TeacherTrainingModule:
        module = tiny_teacher_module(seed=0)
        callbacks = [
            L.pytorch.callbacks.ModelCheckpoint(
                dirpath=folder, every_n_train_steps=2, save_top_k=-1, filename="{step}"
            )
        ]
        if crash_after:
            callbacks.append(crash_after_step(crash_after))
        trainer = cpu_trainer(folder, max_steps=5, callbacks=callbacks, enable_checkpointing=True)
        trainer.fit(module, datamodule=teacher_data(), ckpt_path=ckpt_path)
        return module

    straight = run(tmp_path / "straight")
    with pytest.raises(Crash):
        run(tmp_path / "crashed", crash_after=3)
    resumed = run(tmp_path / "resumed", ckpt_path=str(tmp_path / "crashed" / "step=2.ckpt"))
    for name, tensor in straight.state_dict().items():
        assert torch.equal(tensor, resumed.state_dict()[name]), name
    for name, tensor in straight.ema.shadow.items():
        assert torch.equal(tensor, resumed.ema.shadow[name]), name


def test_vocabulary_mismatch_is_named(teacher_data, tmp_path):
    module = tiny_teacher_module(model=FlowLM(**{**TINY_FLOW_LM, "vocab_size": TINY_VOCAB + 1}))
    with pytest.raises(ValueError, match=f"has {TINY_VOCAB} pieces"):
        cpu_trainer(tmp_path, max_steps=1).fit(module, datamodule=teacher_data())


def test_train_py_teacher_tiny_runs_end_to_end(tiny_corpus, tiny_vae, tmp_path):
    vae = tiny_vae.save(tmp_path / "vae.safetensors")
    extra = (f"model.model.vocab_size={TINY_VOCAB}", "model.model.latent_dim=8", "ablation=noise_calm")
    run_dir = run_stage("train.py", "teacher_tiny", tiny_corpus, vae, tmp_path, *extra)
    model = read_export(run_dir / "export" / "teacher.safetensors").flow_lm
    assert model.context_noise is not None and model.context_noise.max_level == 1.0
    assert {"val/loss", "val/text_gain", "val/text_progress"} <= logged_columns(run_dir)
    assert (run_dir / "samples" / "step_0000002" / "example0_generated.wav").is_file()
    assert (run_dir / "samples" / "step_0000002" / "example0.txt").read_text().strip()
    # A mid-run checkpoint exports as the end of training does (here the last one: the same weights).
    from pockettts.tools.__main__ import main as tools_main

    assert tools_main(["export-checkpoint", str(run_dir / "checkpoints" / "step_0000002.ckpt")]) == 0
    exported = run_dir / "export" / "step_0000002" / "teacher.safetensors"
    again = read_export(exported)
    for (name, value), (_, expected) in zip(
        again.flow_lm.state_dict().items(), model.state_dict().items(), strict=True
    ):
        assert torch.equal(value, expected), name
    assert again.step == 2 and again.ema is True and again.tokenizer == exported.parent / "tokenizer.model"
    assert again.tokenizer.is_file()
    assert (
        again.metadata["latent_hash"]
        == read_export(run_dir / "export" / "teacher.safetensors").metadata["latent_hash"]
    )
    with pytest.raises(FileNotFoundError, match="run config"):
        tools_main([
            "export-checkpoint", str(run_dir / "checkpoints" / "step_0000002.ckpt"),
            "--config", str(tmp_path / "none.yaml"),
        ])  # fmt: skip
