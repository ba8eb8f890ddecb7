"""The resumable CSV logger: a run resumed in its own folder keeps the rows logged before the
resumed step."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import pytest

from pockettts.training.csv_logger import ResumableCSVLogger
from tests.support import Crash, cpu_trainer, tiny_teacher_module
from tests.support import crash_after as crash_after_step


def test_a_run_resumed_in_place_keeps_its_logged_metrics(teacher_data, tmp_path):
    """Lightning's CSVLogger deletes ``metrics.csv`` when a run resumes into its own folder; ours
    keeps the rows before the resumed step, so the file reads as an uninterrupted run's."""

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
        trainer.fit(tiny_teacher_module(seed=0), datamodule=teacher_data(), ckpt_path=ckpt_path)

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
