"""DataModules on the tiny demo corpus: crops and utterances driven by a real Lightning training
loop, and the teacher's, which makes its tokenizer and latent cache on demand."""

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from pockettts.data.datamodule import CropDataModule, UtteranceDataModule
from tests.support import TINY_VOCAB


class BatchRecorder(L.LightningModule):
    """Smallest real training step: fits one gain to the audio and records which items it saw."""

    def __init__(self):
        super().__init__()
        self.gain = torch.nn.Parameter(torch.ones(()))
        self.seen: list[tuple[str, ...]] = []

    def training_step(self, batch, batch_idx):
        self.seen.append(tuple(batch["id"]))
        return (batch["audio"] * self.gain - 0.5 * batch["audio"]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _crops(corpus, **kwargs):
    return CropDataModule(
        data_dir=str(corpus),
        train_manifest="train.jsonl",
        valid_manifest="valid.jsonl",
        crop_seconds=0.5,
        batch_size=2,
        seed=11,
        **kwargs,
    )


def _trainer(tmp_path, max_steps, callbacks=()):
    return L.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        use_distributed_sampler=False,
        callbacks=list(callbacks),
        default_root_dir=tmp_path,
        enable_checkpointing=bool(callbacks),
    )


def test_crop_batches(tiny_corpus):
    dm = _crops(tiny_corpus)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert batch["audio"].shape == (2, 1, 12000)
    assert batch["lengths"].tolist() == [12000, 12000]
    # Crops move between epochs for the same item.
    first = dm.train_set[(0, 0)]["audio"]
    assert not torch.equal(first, dm.train_set[(0, 1)]["audio"])
    assert torch.equal(first, dm.train_set[(0, 0)]["audio"])


def test_utterance_batches_respect_the_frame_budget(tiny_corpus):
    dm = UtteranceDataModule(
        data_dir=str(tiny_corpus),
        train_manifest="train.jsonl",
        valid_manifest="valid.jsonl",
        max_frames=400,
        frame_rate=12.5,
    )
    dm.setup()
    seen = 0
    for batch in dm.train_dataloader():
        frames = batch["audio"].shape[-1] / 24000 * 12.5
        assert batch["audio"].shape[0] * frames <= 400 + batch["audio"].shape[0]
        assert batch["lengths"].max() == batch["audio"].shape[-1]
        assert len(batch["text"]) == len(batch["segments"]) == batch["audio"].shape[0]
        seen += batch["audio"].shape[0]
    assert seen == len(dm.train_set)


def test_resume_mid_epoch_sees_exactly_the_remaining_batches(tiny_corpus, tmp_path):
    per_epoch = len(_crops(tiny_corpus).train_manifest.read_text().splitlines()) // 2
    assert per_epoch >= 3
    total, cut = per_epoch + 2, per_epoch - 1  # resume mid-epoch, then cross into the next epoch

    straight = BatchRecorder()
    _trainer(tmp_path / "a", total).fit(straight, datamodule=_crops(tiny_corpus))

    first = BatchRecorder()
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=cut, save_top_k=-1)
    _trainer(tmp_path / "b", cut, [checkpoint]).fit(first, datamodule=_crops(tiny_corpus))
    second = BatchRecorder()
    ckpt = next((tmp_path / "ckpt").glob(f"*step={cut}.ckpt"))
    _trainer(tmp_path / "c", total).fit(second, datamodule=_crops(tiny_corpus), ckpt_path=ckpt)

    assert len(straight.seen) == total
    assert first.seen + second.seen == straight.seen
    assert second.gain.item() == pytest.approx(straight.gain.item(), abs=1e-6)


def test_missing_manifest_is_reported(tmp_path):
    dm = CropDataModule(data_dir=str(tmp_path), train_manifest="train.jsonl", valid_manifest="valid.jsonl")
    with pytest.raises(FileNotFoundError, match="manifest not found: .*train.jsonl"):
        dm.prepare_data()


def test_datamodule_makes_tokenizer_and_cache_and_batches(teacher_data):
    data = teacher_data()
    data.prepare_data()
    assert data.tokenizer_path.is_file() and data.tokenizer.vocab_size == TINY_VOCAB
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    assert batch.voice.shape[-1] == batch.target.shape[-1] == 8
    assert (batch.target_lengths > 0).all() and (batch.text_lengths > 0).all()
    assert int((batch.voice_lengths + batch.target_lengths).sum()) <= 300 + 75  # frame budget (+ prompts)
    row = 0
    assert torch.equal(
        batch.text[row, batch.text_lengths[row] :],
        torch.full_like(batch.text[row, batch.text_lengths[row] :], TINY_VOCAB),
    )
