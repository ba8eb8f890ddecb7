"""Data-parallel training on CPU: two DDP processes (gloo) train the tiny teacher exactly as one
process that accumulates the same global batch in two micro-batches, and write one run directory;
the effective-batch bookkeeping of ``pockettts.training.run``.

Why this comparison is exact rather than approximate: a global batch is split into the same two
shares either way (``pockettts.data.batching``); every random draw of a micro-batch (CFG dropout,
context noise, the head's noise and times) is seeded from (seed, step, share), not from the rank
(``GuardedOptimizationMixin.seed_step``); and each share's loss is a mean over its own rows, which
DDP averages over ranks exactly as accumulation averages ``loss / 2`` over micro-batches. What may
differ is the order of floating-point additions in the gradient sum (DDP's bucketed all-reduce vs
autograd accumulation), hence a tolerance of 1e-5 after a few AdamW steps, which is far below the
size of the updates themselves (checked too, so an untrained model cannot pass). In practice the
weights come out bit-identical (two-rank gloo all-reduce of halves adds the same two numbers).

Compared against one process taking the whole global batch in a single micro-batch the runs would
differ: the loss is a mean over the frames of a micro-batch, so two shares of unequal length weigh
their frames differently than one pooled mean does.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from pockettts.data.datamodule import CropDataModule, UtteranceDataModule
from pockettts.models.bundle import read_export
from pockettts.models.flow_lm import FlowLM
from pockettts.schema import register_schemas
from pockettts.training.run import log_batch_split, take_accumulation
from pockettts.training.teacher_module import TeacherTrainingModule
from pockettts.training.vae_module import VAETrainingModule
from tests.support import CONFIG_DIR, ROOT, TINY_VOCAB, tiny_teacher_data

STEPS = 3


def train(
    tmp_path: Path, corpus: Path, vae: Path, log_dir: Path, *extra: str, command: list[str] | None = None
) -> subprocess.CompletedProcess:
    """``train.py experiment=teacher_tiny`` (or ``command``) for ``STEPS`` steps on the tiny corpus,
    with CFG dropout, context noise (``ablation=noise_calm``) and the LSD head's distillation term on
    every call, one validation at the end, no audio samples."""
    overrides = [
        "experiment=teacher_tiny",
        "ablation=noise_calm",
        *tiny_teacher_data(corpus, vae, tmp_path),
        "data.max_frames=400",
        "data.max_batch_size=8",
        f"model.model.vocab_size={TINY_VOCAB}",
        "model.model.latent_dim=8",
        # The head draws whether to compute its distillation term from a per-call counter, and an
        # accumulating process makes two calls per step where each rank makes one: always compute it.
        "+model.model.head.distill_prob=1.0",
        f"trainer.max_steps={STEPS}",
        f"trainer.val_check_interval={STEPS}",
        "+trainer.num_sanity_val_steps=0",
        "trainer.log_every_n_steps=1",
        "callbacks.speech_samples=null",
        "callbacks.model_checkpoint.every_n_train_steps=1",
        f"paths.log_dir={log_dir}",
        *extra,
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") and k != "POCKETTTS_RUN_ID"}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", WANDB_MODE="offline")
    result = subprocess.run(
        [*(command or [sys.executable, str(ROOT / "train.py")]), *overrides],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def only_run_dir(log_dir: Path) -> Path:
    runs = list((log_dir / "train" / "runs").iterdir())
    assert len(runs) == 1, f"one run must write one directory, found {runs}"
    return runs[0]


def validation_metrics(run_dir: Path) -> dict[str, float]:
    rows = list(csv.DictReader((run_dir / "csv" / "metrics.csv").open()))
    return {
        k: float(v)
        for row in rows
        if row.get("val/loss") or row.get("val/text_progress")
        for k, v in row.items()
        if v
    }


def trained_weights(run_dir: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(raw parameters of the last checkpoint, exported EMA weights)."""
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] == STEPS
    raw = {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}
    exported = read_export(run_dir / "export" / "teacher.safetensors").flow_lm.state_dict()
    return raw, exported


@pytest.mark.slow
def test_two_ddp_processes_match_one_process_accumulating_the_same_global_batch(
    tiny_corpus, tiny_vae, tmp_path
):
    vae = tiny_vae.save(tmp_path / "vae.safetensors")
    # The DDP run starts from the console command: Lightning restarts it for rank 1 as it was started.
    train(tmp_path, tiny_corpus, vae, tmp_path / "ddp", "trainer=ddp_cpu",
                "trainer.strategy=ddp_find_unused_parameters_true",
                command=[str(Path(sys.executable).parent / "pockettts-train")])  # fmt: skip
    train(tmp_path, tiny_corpus, vae, tmp_path / "single", "trainer=cpu",
                   "trainer.accumulate_grad_batches=2")  # fmt: skip

    # Rank 1 (started by Lightning with its own Hydra) used rank 0's run directory, not a second,
    # timestamped one.
    ddp_run, single_run = only_run_dir(tmp_path / "ddp"), only_run_dir(tmp_path / "single")

    # The effective batch is logged, the same global batch split two ways.
    assert (
        "global batch <= 8 rows, <= 400 padded frames (32 s) = 2 device(s) x 1 micro-batch(es) of <= 4 rows"
        in (ddp_run / "train.log").read_text()
    )
    assert "= 1 device(s) x 2 micro-batch(es) of <= 4 rows" in (single_run / "train.log").read_text()

    # The alignment score is summed over the ranks' halves of the validation set (no random draws:
    # equal up to the 1e-5 weight differences below; the head losses are seeded by batch index,
    # which the ranks share, so those differ more).
    ddp_val, single_val = validation_metrics(ddp_run), validation_metrics(single_run)
    assert set(ddp_val) >= {"val/loss", "val/text_gain", "val/text_progress"}
    assert ddp_val["val/text_progress"] == pytest.approx(single_val["val/text_progress"], abs=2e-4)

    ddp_raw, ddp_ema = trained_weights(ddp_run)
    single_raw, single_ema = trained_weights(single_run)
    after_one_step = torch.load(ddp_run / "checkpoints" / "step_0000001.ckpt", weights_only=False)[
        "state_dict"
    ]
    moved = max((ddp_raw[k] - after_one_step[f"model.{k}"]).abs().max().item() for k in ddp_raw)
    assert moved > 1e-3, "training did not change the weights"
    # Weights and float buffers (latent statistics); integer call counters differ by design (the
    # accumulating process calls the head twice per step).
    for ddp_state, single_state in ((ddp_raw, single_raw), (ddp_ema, single_ema)):
        for name, tensor in ddp_state.items():
            if tensor.is_floating_point():
                torch.testing.assert_close(tensor, single_state[name], rtol=1e-5, atol=1e-5, msg=name)


def _trainer_config(**trainer) -> DictConfig:
    return OmegaConf.create({"trainer": {"_target_": "lightning.Trainer", **trainer}})


def test_batch_split_is_checked_and_logged_before_training(tiny_corpus):
    data = UtteranceDataModule(
        data_dir=str(tiny_corpus), train_manifest="train.jsonl", valid_manifest="valid.jsonl",
        max_frames=1200, max_batch_size=12,
    )  # fmt: skip
    two_cpus = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False)
    assert log_batch_split(two_cpus, data, accumulate=3) == (
        "global batch <= 12 rows, <= 1200 padded frames (96 s) = 2 device(s) x 3 micro-batch(es) "
        "of <= 2 rows, <= 200 frames"
    )
    with pytest.raises(ValueError, match=r"max_batch_size=12 .* into 2 device\(s\) x 4 accumulation"):
        log_batch_split(two_cpus, data, accumulate=4)
    crops = CropDataModule(data_dir=str(tiny_corpus), train_manifest="train.jsonl",
                           valid_manifest="valid.jsonl", batch_size=6, crop_seconds=1.0)  # fmt: skip
    with pytest.raises(ValueError, match=r"batch_size=6 .* into 2 device\(s\) x 2 accumulation"):
        log_batch_split(two_cpus, crops, accumulate=2)


def test_manual_optimisation_modules_take_the_accumulation_or_refuse_it(tiny_vae):
    config = _trainer_config(accumulate_grad_batches=4)
    model = FlowLM(d_model=32, num_heads=4, num_layers=1, dim_feedforward=64, vocab_size=TINY_VOCAB,
                   latent_dim=8, head={"kind": "lsd", "dim": 32, "depth": 1})  # fmt: skip
    teacher = TeacherTrainingModule(model=model, optimizer=torch.optim.AdamW)
    # Lightning refuses accumulate_grad_batches with manual optimisation: the module does it.
    assert take_accumulation(config, teacher) == {"accumulate_grad_batches": 1}
    assert teacher.accumulate_grad_batches == 4
    vae = VAETrainingModule(vae=tiny_vae, discriminator=None, generator_optimizer=torch.optim.Adam)
    with pytest.raises(ValueError, match="VAETrainingModule optimises manually and does not accumulate"):
        take_accumulation(config, vae)
    assert take_accumulation(_trainer_config(), vae) == {"accumulate_grad_batches": 1}


def _run_dir(monkeypatch, **env: str) -> str:
    for name in ("SLURM_JOB_ID", "SLURM_STEP_ID", "POCKETTTS_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    register_schemas()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["paths.log_dir=/logs"], return_hydra_config=True)
    return str(cfg.hydra.run.dir)


def test_run_directory_is_the_same_for_every_srun_task(monkeypatch):
    """srun starts every rank itself, so each composes its own config: under SLURM the directory
    may depend only on the job and step, not on the time a process started."""
    slurm = dict(SLURM_JOB_ID="4242", SLURM_STEP_ID="0")
    first, second = _run_dir(monkeypatch, **slurm), _run_dir(monkeypatch, **slurm)
    assert first == second == "/logs/train/runs/4242_0"
    assert _run_dir(monkeypatch, POCKETTTS_RUN_ID="exp1", **slurm) == "/logs/train/runs/exp1"
    # Locally, two runs started at different times get two directories (Lightning hands rank 0's
    # directory to the processes it starts, tested above).
    assert _run_dir(monkeypatch) != _run_dir(monkeypatch)
