"""Long runs and many processes: checkpoint retention and its projected disk use, a resumed run's
metrics and W&B run, the VAE's non-finite guard deciding on every rank together."""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import socket
import struct
import subprocess
import sys
from pathlib import Path

import hydra
import lightning as L
import pytest
import torch
from omegaconf import OmegaConf

from pockettts.training.checkpoint_retention import RetainingModelCheckpoint
from pockettts.training.csv_logger import ResumableCSVLogger
from tests.support import (
    CONFIG_DIR,
    ROOT,
    TINY_VAE,
    TINY_VOCAB,
    Crash,
    cpu_trainer,
    crash_after,
    run_stage,
    tiny_teacher_module,
)


def _train_teacher(
    folder: Path, teacher_data, max_steps: int, *callbacks, ckpt_path: str | None = None, **kwargs
) -> None:
    """Train the tiny teacher for ``max_steps`` with ``callbacks``, checkpointing on."""
    trainer = cpu_trainer(
        folder, max_steps=max_steps, callbacks=list(callbacks), enable_checkpointing=True, **kwargs
    )
    trainer.fit(tiny_teacher_module(), datamodule=teacher_data(), ckpt_path=ckpt_path)


def _names(folder: Path) -> set[str]:
    return {path.name for path in folder.iterdir()}


def _retaining(folder: Path) -> RetainingModelCheckpoint:
    return RetainingModelCheckpoint(
        dirpath=folder / "checkpoints", filename="step_{step:07d}", auto_insert_metric_name=False,
        every_n_train_steps=1, save_top_k=-1, save_last=True, keep_last=2, keep_every_n_steps=3,
    )  # fmt: skip


def test_checkpoints_keep_the_last_k_and_every_nth_and_the_disk_use_is_projected(
    teacher_data, tmp_path, caplog
):
    expected = {"step_0000003.ckpt", "step_0000006.ckpt", "step_0000007.ckpt", "last.ckpt"}
    with caplog.at_level(logging.INFO, logger="pockettts.training.checkpoint_retention"):
        _train_teacher(tmp_path / "straight", teacher_data, 7, _retaining(tmp_path / "straight"))
    assert _names(tmp_path / "straight" / "checkpoints") == expected
    # Projected at the start, before the optimizer holds a state: 3 step checkpoints and last.ckpt,
    # each about a written checkpoint's size (pickling adds ~250 bytes per tensor: 10% at this size).
    projected = re.search(r"checkpoints: 4 kept over 7 steps .* x (\S+) GB each .* = (\S+) GB", caplog.text)
    written = (tmp_path / "straight" / "checkpoints" / "step_0000007.ckpt").stat().st_size
    assert float(projected[1]) * 1e9 == pytest.approx(written, rel=0.15)
    assert float(projected[2]) == pytest.approx(4 * float(projected[1]), rel=1e-3)

    # A crash, and a resume from last.ckpt, leave the same files: the callback's state lists them.
    crashed = tmp_path / "crashed"
    with pytest.raises(Crash):
        _train_teacher(crashed, teacher_data, 7, _retaining(crashed), crash_after(5))
    assert _names(crashed / "checkpoints") == {"step_0000003.ckpt", "step_0000004.ckpt", "last.ckpt"}
    last = str(crashed / "checkpoints" / "last.ckpt")
    _train_teacher(crashed, teacher_data, 7, _retaining(crashed), ckpt_path=last)
    assert _names(crashed / "checkpoints") == expected


def _rows(folder: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((folder / "csv" / "metrics.csv").open()))


def test_a_run_crashed_right_after_a_checkpoint_resumes_with_every_row(teacher_data, tmp_path):
    """The checkpoint of step 2 is written before step 2's row is logged; the learning-rate monitor
    then logs step 2 again before the resumed run logs step 3: the resumed ``metrics.csv`` must keep
    step 2's training row and read as the uninterrupted run's, row for row."""

    def run(folder: Path, *crash: L.Callback, ckpt_path: str | None = None) -> None:
        checkpoint = L.pytorch.callbacks.ModelCheckpoint(dirpath=folder, every_n_train_steps=2, save_top_k=-1)
        _train_teacher(
            folder, teacher_data, 4, checkpoint, L.pytorch.callbacks.LearningRateMonitor("step"), *crash,
            ckpt_path=ckpt_path, logger=ResumableCSVLogger(folder, name="csv", version=""),
            log_every_n_steps=1,
        )  # fmt: skip

    run(tmp_path / "straight")
    with pytest.raises(Crash):
        run(tmp_path / "crashed", crash_after(3))
    run(tmp_path / "crashed", ckpt_path=str(next((tmp_path / "crashed").glob("*step=2.ckpt"))))
    assert _rows(tmp_path / "crashed") == _rows(tmp_path / "straight")
    assert [row["step"] for row in _rows(tmp_path / "straight") if row["train/loss"]] == ["1", "2", "3", "4"]


def _wandb_records(offline_run: Path) -> list:
    """The records of an offline W&B run (``run-<id>.wandb``: a 7-byte header, then LevelDB-log
    framing: 32 KiB blocks of chunks with a 7-byte header each, a record split over FIRST, MIDDLE
    and LAST chunks), as ``wandb_internal_pb2.Record``s."""
    from wandb.proto import wandb_internal_pb2

    data = next(offline_run.glob("run-*.wandb")).read_bytes()
    records, pending, position = [], b"", 7
    while position + 7 <= len(data):
        if (left := 32768 - position % 32768) < 7:  # a block's tail too short for a header: padding
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        pending += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # FULL or LAST
            records.append(wandb_internal_pb2.Record.FromString(pending))
            pending = b""
    return records


def _wandb_run(offline_run: Path) -> tuple[str, str, dict]:
    """(run id, display name, config) of an offline W&B run."""
    records = _wandb_records(offline_run)
    run = next(r.run for r in records if r.HasField("run"))
    config = {
        u.key: json.loads(u.value_json) for r in records if r.HasField("config") for u in r.config.update
    }
    return run.run_id, run.display_name, config


def test_a_resumed_run_continues_its_wandb_run_with_config_name_and_media(tiny_corpus, tiny_vae, tmp_path):
    """``logger=many`` offline (``WANDB_MODE=offline``, set for the tests): the run is named after
    the experiment, its resolved config is the W&B config, audio and spectrograms are W&B media, and
    resuming in place continues the same W&B run id."""
    vae = tiny_vae.save(tmp_path / "vae.safetensors")
    extra = ["logger=many", f"model.model.vocab_size={TINY_VOCAB}", "model.model.latent_dim=8"]
    run_dir = run_stage("train.py", "teacher_tiny", tiny_corpus, vae, tmp_path, *extra)
    run_id = (run_dir / "wandb_run_id").read_text().strip()
    (first,) = (run_dir / "wandb").glob("offline-run-*")
    assert first.name.endswith(f"-{run_id}")
    assert list((first / "files" / "media" / "audio" / "samples").glob("example0_generated_*.wav"))
    assert list((first / "files" / "media" / "images" / "spectrograms").glob("example0_*.png"))
    logged_id, name, config = _wandb_run(first)
    assert (logged_id, name) == (run_id, "teacher_tiny")
    assert config["trainer"]["max_steps"] == 2 and config["paths"]["output_dir"] == str(run_dir)

    resume = [f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", "trainer.max_steps=3"]
    run_stage("train.py", "teacher_tiny", tiny_corpus, vae, tmp_path, *extra, *resume)
    assert (run_dir / "wandb_run_id").read_text().strip() == run_id
    (second,) = set((run_dir / "wandb").glob("offline-run-*")) - {first}
    logged_id, name, config = _wandb_run(second)
    assert (logged_id, name, config["trainer"]["max_steps"]) == (run_id, "teacher_tiny", 3)


def test_wandb_mode_is_left_to_wandb(tmp_path, monkeypatch):
    """``logger=wandb`` with ``WANDB_MODE=disabled`` is disabled, as W&B documents: no run folder."""
    monkeypatch.setenv("WANDB_MODE", "disabled")
    node = OmegaConf.load(Path(CONFIG_DIR) / "logger" / "wandb.yaml").wandb
    node.save_dir, node.tags = str(tmp_path), []
    logger = hydra.utils.instantiate(node)
    logger.log_metrics({"loss": 1.0}, step=0)
    logger.finalize("success")
    assert not (tmp_path / "wandb").exists()


def _nan_on_rank_one_worker(out_dir: str) -> None:
    """One rank of a two-process gloo run (started by ``test_the_vae_guard_skips_on_every_rank...``):
    the tiny VAE-GAN for 3 steps on random audio, whose second batch is NaN on rank 1 only; writes
    the guard's count, the step and the weights to ``out_dir/rank<r>.pt``."""
    from lightning.pytorch.strategies import DDPStrategy
    from torch.utils.data import DataLoader

    from pockettts.models.vae import AudioVAE
    from pockettts.modules.discriminators import MultiScaleSTFTDiscriminator
    from pockettts.training.vae_module import VAETrainingModule

    rank = int(os.environ["LOCAL_RANK"])
    generator = torch.Generator().manual_seed(rank)
    batches = [{"audio": torch.randn(2, 1, 1920 * 2, generator=generator) * 0.1} for _ in range(4)]
    if rank == 1:
        batches[1]["audio"][0, 0, 100] = float("nan")
    torch.manual_seed(0)
    module = VAETrainingModule(
        vae=AudioVAE(**TINY_VAE),
        discriminator=MultiScaleSTFTDiscriminator(n_ffts=(128,), channels=4),
        generator_optimizer=torch.optim.Adam,
        discriminator_optimizer=torch.optim.Adam,
        loss_weights=dict(adversarial=1.0, kl=0.01),
        ema_decay=None,
    )
    strategy = DDPStrategy(process_group_backend="gloo", find_unused_parameters=True)
    trainer = cpu_trainer(out_dir, max_steps=3, devices=2, strategy=strategy)
    trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None))
    state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    result = {"skipped": module.guard.skipped, "step": trainer.global_step, "state": state}
    torch.save(result, Path(out_dir) / f"rank{rank}.pt")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_vae_guard_skips_on_every_rank_when_one_rank_sees_a_nan(tmp_path):
    """Two gloo processes, a NaN batch on rank 1 only: both ranks skip that step (the discriminator's
    and the generator's), stay identical and finish. A rank skipping alone would leave the other
    waiting in the gradient all-reduce: the timeout catches that hang."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), WORLD_SIZE="2", NODE_RANK="0",
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")  # fmt: skip
    code = f"import {__name__} as t; t._nan_on_rank_one_worker({str(tmp_path)!r})"
    ranks = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env={**env, "LOCAL_RANK": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for rank in (0, 1)
    ]
    try:
        outputs = [rank.communicate(timeout=240)[0] for rank in ranks]
    finally:
        for rank in ranks:
            rank.kill()
    assert [rank.returncode for rank in ranks] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    zero, one = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert zero["skipped"] == one["skipped"] == 2  # the discriminator's loss, then the generator's
    assert zero["step"] == one["step"] == 3
    for name, tensor in zero["state"].items():
        assert torch.equal(tensor, one["state"][name]), name
