"""Stage 2 end to end on a tiny corpus: prompt/target cuts, the teacher datamodule (tokenizer +
latent cache made on demand), a training loss that goes down, exact resume, export and init_from
with a new tokenizer, and ``train.py experiment=teacher_tiny``."""

from __future__ import annotations

import csv
import functools
import json
import random
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from pockettts.data.datamodule import TeacherDataModule
from pockettts.data.examples import CutConfig, cut_item
from pockettts.data.manifest import ManifestItem, TimedSpan, read_manifest, write_manifest
from pockettts.eval.runner import spread
from pockettts.eval.validation_cuts import validation_examples
from pockettts.models.bundle import read_export, write_export
from pockettts.models.flow_lm import FlowLM
from pockettts.models.sampling import SamplingOptions
from pockettts.training.teacher_module import TeacherTrainingModule, export_flow_lm, load_weights
from tests.conftest import CONFIG_DIR, Crash, cpu_trainer
from tests.conftest import crash_after as crash_after_step

ROOT = Path(CONFIG_DIR).parent
VOCAB = 48
MODEL = dict(head={"kind": "lsd", "dim": 32, "depth": 2, "batch_multiplier": 2}, d_model=32, num_heads=4,
             num_layers=2, dim_feedforward=64, vocab_size=VOCAB, latent_dim=8)  # fmt: skip


def _item(words: list[tuple[str, float, float]] | None, duration: float = 6.0) -> ManifestItem:
    spans = [TimedSpan(text, start, end) for text, start, end in words] if words else None
    return ManifestItem(id="a", audio="a.wav", text="one two three four five", duration=duration, words=spans)


WORDS = [("one", 0.2, 0.8), ("two", 1.0, 1.6), ("three", 1.9, 2.5), ("four", 2.8, 3.4), ("five", 3.7, 4.3)]


def test_cuts_fall_between_words_and_keep_the_rest_of_the_text():
    config = CutConfig(max_voice_prompt_sec=5.0, min_cut_sec=1.0, trail_sec=0.2)
    seen = set()
    for seed in range(40):
        cut = cut_item(_item(WORDS), n_frames=75, frame_rate=12.5, rng=random.Random(seed), config=config)
        seen.add(cut.text)
        assert cut.prompt[1] == cut.target[0] and cut.prompt[0] == 0
        assert cut.target[1] == round((4.3 + 0.2) * 12.5)  # trailing silence trimmed after the last word
        first_word = cut.text.split()[0]
        start = dict((w, s) for w, s, _ in WORDS)[first_word]
        assert cut.target[0] / 12.5 <= start  # the cut precedes the first word of the text
    assert seen == {"three four five", "four five"}  # >= 1 s of speech on both sides


def test_prompt_length_is_capped_and_zero_means_whole_prefix():
    words = [(f"w{i}", i * 1.0 + 0.1, i * 1.0 + 0.8) for i in range(10)]
    capped = CutConfig(max_voice_prompt_sec=2.0)
    for seed in range(20):
        cut = cut_item(_item(words, 11.0), 137, 12.5, random.Random(seed), capped)
        assert (cut.prompt[1] - cut.prompt[0]) / 12.5 <= 2.0 + 1e-6
    full = cut_item(_item(words, 11.0), 137, 12.5, random.Random(0), CutConfig(max_voice_prompt_sec=0))
    assert full.prompt[0] == 0


def test_without_alignment_the_prompt_is_a_window_and_the_target_everything():
    cut = cut_item(_item(None), n_frames=75, frame_rate=12.5, rng=random.Random(0), config=CutConfig())
    assert cut.text == "one two three four five" and cut.target == (0, 75)
    assert cut.prompt[1] - cut.prompt[0] == round(5.0 * 12.5)


@pytest.fixture
def teacher_data(tiny_corpus, tiny_vae, tmp_path):
    vae = tiny_vae.save(tmp_path / "vae.safetensors")
    return functools.partial(
        TeacherDataModule,
        vae=str(vae),
        cache_dir=str(tmp_path / "latents"),
        tokenizer=str(tmp_path / "tok" / "tokenizer.model"),
        vocab_size=VOCAB,
        max_frames=300,
        max_batch_size=4,
        data_dir=str(tiny_corpus),
        train_manifest="train.jsonl",
        valid_manifest="valid.jsonl",
        num_workers=0,
        seed=1,
    )


def _module(seed: int = 0, **overrides) -> TeacherTrainingModule:
    torch.manual_seed(seed)
    kwargs = dict(
        model=FlowLM(**MODEL),
        optimizer=functools.partial(torch.optim.AdamW, lr=3e-3),
        lr_schedule={"warmup_steps": 2},
        ema_decay=0.9,
        latent_stats="cache",
    )
    return TeacherTrainingModule(**{**kwargs, **overrides})


def test_datamodule_makes_tokenizer_and_cache_and_batches(teacher_data):
    data = teacher_data()
    data.prepare_data()
    assert data.tokenizer_path.is_file() and data.tokenizer.vocab_size == VOCAB
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    assert batch.voice.shape[-1] == batch.target.shape[-1] == 8
    assert (batch.target_lengths > 0).all() and (batch.text_lengths > 0).all()
    assert int((batch.voice_lengths + batch.target_lengths).sum()) <= 300 + 75  # frame budget (+ prompts)
    row = 0
    assert torch.equal(
        batch.text[row, batch.text_lengths[row] :],
        torch.full_like(batch.text[row, batch.text_lengths[row] :], VOCAB),
    )


def test_overfitting_one_batch_lowers_the_loss(teacher_data, tmp_path):
    data = teacher_data()
    data.prepare_data()
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    module = _module(text_dropout=0.0, voice_dropout=0.0)
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


def test_guided_attention_loss_is_zero_on_the_diagonal_and_grows_off_it():
    from pockettts.models.text_alignment import guided_attention_loss

    queries, tokens = 30, 10
    diagonal = torch.zeros(queries, tokens)
    diagonal[torch.arange(queries), torch.arange(queries) * tokens // queries] = 0.5  # half on voice/audio
    uniform = torch.full((queries, tokens), 0.05)
    losses = [guided_attention_loss(a, sigma=0.2).item() for a in (diagonal, uniform, diagonal.flip(0))]
    assert losses[0] < 0.05 < losses[1] < losses[2]
    scores = torch.randn(queries, tokens, requires_grad=True)
    guided_attention_loss(scores.softmax(-1)).backward()
    assert scores.grad.abs().sum() > 0


def test_guided_attention_pulls_the_chosen_heads_to_the_diagonal(teacher_data, tmp_path):
    """``guided_attention``: the guide term is part of the training loss only (validation losses stay
    comparable), skips rows whose text was dropped, and training on it lowers it."""
    data = teacher_data()
    data.prepare_data()
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    options = {"weight": 1.0, "sigma": 0.2, "layers": [1], "heads": 2}
    module = _module(text_dropout=0.0, voice_dropout=0.0, guided_attention=options)
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
        _module(guided_attention={"layers": [2]})
    with pytest.raises(ValueError, match="unknown guided_attention options"):
        _module(guided_attention={"sigmas": 0.1})
    assert _module(guided_attention={"weight": 0.5}).guided_attention == {
        "weight": 0.5, "sigma": 0.2, "layers": [1], "heads": MODEL["num_heads"]}  # fmt: skip


def test_validation_is_seeded_and_reports_what_the_text_is_worth(teacher_data):
    data = teacher_data()
    data.prepare_data()
    data.setup("fit")
    batch = next(iter(data.val_dataloader()))
    module = _module().eval()
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


def test_alignment_scores_tell_a_march_through_the_text_from_none():
    from pockettts.models.text_alignment import alignment_scores

    frames, tokens = 20, 5
    march = torch.zeros(frames, tokens)
    march[torch.arange(frames), torch.arange(frames) * tokens // frames] = 0.8  # 0.2 elsewhere
    backwards, still = march.flip(0), torch.full((frames, tokens), 0.1)
    mass, progress = alignment_scores(torch.stack([march, backwards, still]))
    torch.testing.assert_close(mass, torch.tensor([0.8, 0.8, 0.5]))
    assert progress[0] > 0.95 and progress[1] < -0.95 and progress[2] == 0


def test_alignment_report_reads_the_exported_models_own_attention(teacher_data, tmp_path, capsys):
    """Per-head scores over the first items, heads ranked by progress; the text attention is the
    first layer's attention of the audio positions (after BOS, before EOS) onto the text tokens of
    the sequence [voice prefix, text, BOS + latents], rebuilt here by hand."""
    from pockettts.eval.alignment import alignment_report, example_attention
    from pockettts.tools.__main__ import main

    data = teacher_data()
    data.prepare_data()
    data.setup("fit")
    module = _module()
    path = export_flow_lm(module.model, tmp_path / "export" / "teacher.safetensors", data)
    # Training's val/text_progress (padded batches) is the report's best head over the same cuts.
    trainer = cpu_trainer(tmp_path, max_steps=1, limit_val_batches=1.0)
    logged = trainer.validate(module, datamodule=data, verbose=False)[0]
    whole = alignment_report(path, data.valid_manifest, data.cache_dir)
    assert logged["val/text_progress"] == pytest.approx(whole["heads"][0]["progress"], abs=1e-5)
    report = alignment_report(path, data.valid_manifest, data.cache_dir, limit=3)
    assert report["items"] == 3 and len(report["heads"]) == MODEL["num_layers"] * MODEL["num_heads"]
    assert all(0 < h["text_mass"] < 1 and -1 <= h["progress"] <= 1 for h in report["heads"])
    progress = [h["progress"] for h in report["heads"]]
    assert progress == sorted(progress, reverse=True)

    model, dataset, _ = validation_examples(path, data.valid_manifest, data.cache_dir)
    example = dataset[0]
    attention = example_attention(model, example)
    frames, tokens = example["target"].shape[0], example["tokens"].shape[0]
    assert attention.shape == (MODEL["num_layers"], MODEL["num_heads"], frames - 1, tokens)
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


def test_text_gain_report_of_an_export_is_repeatable_and_the_loss_gap(teacher_data, tmp_path):
    from pockettts.eval.text_gain import text_gain
    from pockettts.tools.__main__ import main

    data = teacher_data()
    data.prepare_data()
    data.setup("fit")
    module = _module()
    with torch.no_grad():  # AdaLN-zero: at init the head ignores z, so nothing could depend on the text
        for parameter in module.model.head.parameters():
            parameter.normal_(0.0, 0.2)
    path = export_flow_lm(module.model, tmp_path / "export" / "teacher.safetensors", data)
    rng = torch.get_rng_state()
    report = text_gain(path, data.valid_manifest, data.cache_dir, limit=3, draws=2, batch_size=2)
    assert torch.equal(rng, torch.get_rng_state())  # seeded draws, the global RNG untouched
    again = text_gain(path, data.valid_manifest, data.cache_dir, limit=3, draws=2, batch_size=2)
    assert report == again and report["items"] == 3
    assert report["text_gain"] == report["head_loss_without_text"] - report["head_loss"] != 0
    # --spread: the items spread over the manifest, the same as a manifest of just those items
    # (written beside it: audio paths are relative to the manifest's folder).
    manifest = Path(data.train_manifest)
    items = read_manifest(manifest)
    assert spread(len(items), 2) != [0, 1]
    picked = write_manifest(
        manifest.with_name(f"picked_{tmp_path.name}.jsonl"), [items[i] for i in spread(len(items), 2)]
    )
    try:
        spread_report = text_gain(path, manifest, data.cache_dir, limit=2, draws=2, spread_items=True)
        subset_report = text_gain(path, picked, data.cache_dir, draws=2)
    finally:
        picked.unlink()
    first_report = text_gain(path, manifest, data.cache_dir, limit=2, draws=2)
    assert spread_report["selection"] == "spread" and first_report["selection"] == "first"
    assert spread_report["text_gain"] == pytest.approx(subset_report["text_gain"], rel=1e-6, abs=1e-9)
    assert spread_report["text_gain"] != first_report["text_gain"]
    args = ["--teacher", str(path), "--manifest", str(data.valid_manifest), "--cache", str(data.cache_dir)]
    assert main(["text-gain", *args, "--limit", "1", "--draws", "1", "--spread"]) == 0


def test_logged_curves_count_optimizer_steps_when_accumulating(teacher_data, tmp_path):
    module = _module()
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
        module = _module()
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
        module = _module(seed=0)
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


def test_a_run_resumed_in_place_keeps_its_logged_metrics(teacher_data, tmp_path):
    """Lightning's CSVLogger deletes ``metrics.csv`` when a run resumes into its own folder; ours
    keeps the rows before the resumed step, so the file reads as an uninterrupted run's."""
    from pockettts.training.csv_logger import ResumableCSVLogger

    def run(folder: Path, crash_after: int | None = None, ckpt_path: str | None = None) -> None:
        callbacks = [
            L.pytorch.callbacks.ModelCheckpoint(
                dirpath=folder, every_n_train_steps=2, save_top_k=-1, filename="{step}"
            )
        ]
        if crash_after:
            callbacks.append(crash_after_step(crash_after))
        logger = ResumableCSVLogger(folder, name="csv", version="")
        trainer = cpu_trainer(
            folder, max_steps=5, callbacks=callbacks, enable_checkpointing=True, logger=logger,
            log_every_n_steps=1,
        )  # fmt: skip
        trainer.fit(_module(seed=0), datamodule=teacher_data(), ckpt_path=ckpt_path)

    def logged(folder: Path) -> list[tuple[int, str]]:
        rows = csv.DictReader((folder / "csv" / "metrics.csv").open())
        return sorted((int(r["step"]), r["train/loss"]) for r in rows if r.get("train/loss"))

    run(tmp_path / "straight")
    with pytest.raises(Crash):
        run(tmp_path / "crashed", crash_after=4)
    # Rows are logged after each step (1..): step 3 came after the checkpoint the run resumes from.
    assert [step for step, _ in logged(tmp_path / "crashed")] == [1, 2, 3]
    run(tmp_path / "crashed", ckpt_path=str(tmp_path / "crashed" / "step=2.ckpt"))
    assert logged(tmp_path / "crashed") == logged(tmp_path / "straight")
    assert [step for step, _ in logged(tmp_path / "straight")] == [1, 2, 3, 4, 5]


def test_export_and_init_from_with_a_new_tokenizer(teacher_data, tmp_path):
    module = _module(export_path=str(tmp_path / "export" / "teacher.safetensors"))
    cpu_trainer(tmp_path, max_steps=2).fit(module, datamodule=teacher_data())
    exported = tmp_path / "export" / "teacher.safetensors"
    assert (tmp_path / "export" / "tokenizer.model").is_file()
    export = read_export(exported)
    assert (export.step, export.ema) == (2, module.ema is not None)
    loaded = export.flow_lm
    with module.exported_weights() as model:
        for name, tensor in model.state_dict().items():
            torch.testing.assert_close(loaded.state_dict()[name], tensor)
    bigger = FlowLM(**{**MODEL, "vocab_size": VOCAB + 10})
    load_weights(bigger, exported)  # new language: text embedding re-initialised, the rest copied
    torch.testing.assert_close(
        bigger.transformer.layers[0].linear1.weight, loaded.transformer.layers[0].linear1.weight
    )
    deeper = FlowLM(**{**MODEL, "num_layers": 3})
    with pytest.raises(ValueError, match="does not fit"):
        load_weights(deeper, exported)


def test_init_from_a_shallower_teacher_grows_it_without_changing_what_it_computes(tmp_path):
    """``grow_layers``: the 2 source layers spread over 5, the added ones identity blocks at step 0,
    so the grown teacher's outputs equal the source's; training then moves the added layers."""
    torch.manual_seed(0)
    source = FlowLM(**MODEL).eval()
    for parameter in source.parameters():  # non-trivial everywhere, not just the initialisation
        parameter.data.normal_(0.0, 0.2)
    exported = write_export(source, tmp_path / "source.safetensors")
    grown = FlowLM(**{**MODEL, "num_layers": 5}).eval()
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
        text=torch.randint(0, VOCAB, (2, 6)), text_lengths=torch.tensor([6, 4]),
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
        load_weights(FlowLM(**{**MODEL, "num_layers": 1}), exported, grow_layers=True)


def test_vocabulary_mismatch_is_named(teacher_data, tmp_path):
    module = _module(model=FlowLM(**{**MODEL, "vocab_size": VOCAB + 1}))
    with pytest.raises(ValueError, match=f"has {VOCAB} pieces"):
        cpu_trainer(tmp_path, max_steps=1).fit(module, datamodule=teacher_data())


def logged_columns(run_dir: Path) -> set[str]:
    """The metrics a run's ``metrics.csv`` holds a value of."""
    return {
        k for row in csv.DictReader((run_dir / "csv" / "metrics.csv").open()) for k, v in row.items() if v
    }


def run_stage(entry_point: str, experiment: str, corpus: Path, vae: Path, tmp_path: Path, *extra: str):
    """``<entry_point> experiment=<experiment>`` for 2 steps on the tiny corpus with a tiny VAE,
    samples and checkpoints at step 2; the run directory is ``tmp_path / "run"``."""
    overrides = [
        f"experiment={experiment}",
        f"data.data_dir={corpus}",
        "data.train_manifest=train.jsonl",
        "data.valid_manifest=valid.jsonl",
        f"data.vae={vae}",
        f"data.cache_dir={tmp_path / 'latents'}",
        f"data.tokenizer={tmp_path / 'tok' / 'tokenizer.model'}",
        f"data.vocab_size={VOCAB}",
        "data.max_frames=300",
        "trainer.max_steps=2",
        "trainer.val_check_interval=2",
        "trainer.limit_val_batches=1",
        "callbacks.speech_samples.every_n_steps=2",
        "callbacks.speech_samples.num_examples=1",
        "callbacks.speech_samples.max_seconds=1.0",
        "callbacks.model_checkpoint.every_n_train_steps=2",
        f"hydra.run.dir={tmp_path / 'run'}",
        f"paths.log_dir={tmp_path}",
        *extra,
    ]
    command = [sys.executable, str(ROOT / entry_point), *overrides]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp_path / "run"


def test_train_py_teacher_tiny_runs_end_to_end(tiny_corpus, tiny_vae, tmp_path):
    vae = tiny_vae.save(tmp_path / "vae.safetensors")
    extra = (f"model.model.vocab_size={VOCAB}", "model.model.latent_dim=8", "ablation=noise_calm")
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


def test_resynthesis_report_transcribes_generation_and_codec(teacher_data, tiny_en, tmp_path):
    from pockettts.eval.resynthesis import resynthesis_report

    data = teacher_data()
    module = _module(export_path=str(tmp_path / "export" / "teacher.safetensors"))
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
    from pockettts.eval.resynthesis import resynthesis_report, teacher_forced_latents

    data = teacher_data()
    data.prepare_data()
    data.setup("fit")
    module = _module()
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
