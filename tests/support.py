"""Helpers and constants shared by test modules (fixtures live in ``conftest.py`` files): paths, tiny
model sizes, synthetic signals, a quiet CPU trainer, crash simulation, streaming checks and the
stage entry points run for two steps."""

from __future__ import annotations

import csv
import functools
import math
import os
import random
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from pockettts.models.flow_lm import FlowLM
from pockettts.models.vae import load_vae

# Lightning is imported where a helper first needs it: runs that never train skip its import time.

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = str(ROOT / "configs")

TINY_VOICES = ["flite:slt", "flite:awb", "festival:ked_diphone"]

TINY_VAE = dict(
    latent_dim=8,
    seanet=dict(dimension=16, n_filters=4, ratios=[6, 5, 4]),
    transformer=dict(d_model=16, num_heads=2, num_layers=1, dim_feedforward=32, context=12),
)

TINY_VOCAB = 48
TINY_FLOW_LM = dict(
    head={"kind": "lsd", "dim": 32, "depth": 2, "batch_multiplier": 2}, d_model=32, num_heads=4, num_layers=2,
    dim_feedforward=64, vocab_size=TINY_VOCAB, latent_dim=8,
)  # fmt: skip

TINY_WAVLM = dict(
    extractor_mode="group_norm",
    extractor_conv_layer_config=[
        (16, 10, 5),
        (16, 3, 2),
        (16, 3, 2),
        (16, 3, 2),
        (16, 3, 2),
        (16, 2, 2),
        (16, 2, 2),
    ],
    extractor_conv_bias=False,
    encoder_embed_dim=64,
    encoder_projection_dropout=0.0,
    encoder_pos_conv_kernel=16,
    encoder_pos_conv_groups=4,
    encoder_num_layers=2,
    encoder_num_heads=4,
    encoder_num_buckets=32,
    encoder_max_distance=100,
    encoder_attention_dropout=0.0,
    encoder_ff_interm_features=128,
    encoder_ff_interm_dropout=0.0,
    encoder_dropout=0.0,
    encoder_layer_norm_first=False,
    encoder_layer_drop=0.0,
    aux_num_out=None,
)


# --- signals -----------------------------------------------------------------------------------


def write_tone(
    path: Path,
    seconds: float = 1.0,
    sample_rate: int = 16000,
    channels: int = 1,
    freq: float = 440.0,
    amplitude: float = 0.3,
) -> Path:
    """A sine tone file (a stand-in for speech where only signal properties matter)."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    tone = (amplitude * np.sin(2 * math.pi * freq * t)).astype(np.float32)
    data = np.stack([tone] * channels, axis=1) if channels > 1 else tone
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, data, sample_rate)
    return path


def speechlike(seconds: float = 0.5, seed: int = 0, sample_rate: int = 24_000) -> torch.Tensor:
    """A harmonic tone with a slow envelope, ``[1, 1, T]``."""
    generator = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * sample_rate)) / sample_rate
    f0 = 140.0
    wave = sum(
        torch.sin(2 * math.pi * f0 * k * t + torch.rand(1, generator=generator)) / k for k in range(1, 8)
    )
    envelope = 0.5 + 0.5 * torch.sin(2 * math.pi * 3.0 * t)
    return (0.1 * wave * envelope).view(1, 1, -1)


def amplify_codec(vae_path: Path) -> None:
    """The random tiny codec whispers (peaks near -40 dBFS, "silent" by the -50 dB frame rule):
    scale its last decoder layer so the output is audible and every metric has something to score."""
    vae = load_vae(vae_path)
    last = vae.decoder.model[-1].conv
    with torch.no_grad():
        last.weight.mul_(40.0)
        last.bias.mul_(40.0)
    vae.save(vae_path)


# --- streaming ---------------------------------------------------------------------------------


def random_chunks(total: int, max_chunk: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    sizes = []
    while sum(sizes) < total:
        sizes.append(min(rng.randint(1, max_chunk), total - sum(sizes)))
    return sizes


def run_streamed(
    module, x, max_chunk: int, seed: int = 0, time_dim: int = -1, state_of=None, out_time_dim=None
):
    """Run ``module`` over ``x`` in random chunks with one state (from ``state_of``, default ``module``)."""
    state = (state_of or module).init_state(x.shape[0])
    outputs, start = [], 0
    for size in random_chunks(x.shape[time_dim], max_chunk, seed):
        outputs.append(module(x.narrow(time_dim, start, size), state))
        start += size
    return torch.cat(outputs, dim=time_dim if out_time_dim is None else out_time_dim)


def assert_causal(
    module, x, cut: int, out_per_in: float, time_dim: int = -1, out_time_dim: int | None = None
):
    """Changing the input from ``cut`` on leaves every output computed before ``cut`` unchanged."""
    out_time_dim = time_dim if out_time_dim is None else out_time_dim
    changed = x.clone()
    changed.narrow(time_dim, cut, x.shape[time_dim] - cut).normal_()
    y, y_changed = module(x), module(changed)
    keep = int(cut * out_per_in)
    torch.testing.assert_close(y.narrow(out_time_dim, 0, keep), y_changed.narrow(out_time_dim, 0, keep))
    assert not torch.allclose(y, y_changed), "the perturbation should change later outputs"


# --- training ----------------------------------------------------------------------------------


def cpu_trainer(root, max_steps: int, **kwargs):
    """A quiet single-process CPU Lightning Trainer for tests (no logger, checkpoints or validation
    unless asked for)."""
    import lightning as L

    defaults = dict(
        accelerator="cpu",
        devices=1,
        max_steps=max_steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        default_root_dir=root,
        use_distributed_sampler=False,
    )
    return L.Trainer(**{**defaults, **kwargs})


class Crash(Exception):
    """Raised by ``CrashAfter`` to simulate a run dying mid-way."""


def crash_after(step: int):
    """A callback that kills the run once ``step`` optimizer steps are done (after checkpoints)."""
    import lightning as L

    class CrashAfter(L.Callback):
        def on_train_batch_end(self, trainer, *args) -> None:
            if trainer.global_step == step:
                raise Crash

    return CrashAfter()


def tiny_teacher_module(seed: int = 0, **overrides):
    """A ``TeacherTrainingModule`` around a seeded ``TINY_FLOW_LM``."""
    from pockettts.training.teacher_module import TeacherTrainingModule

    torch.manual_seed(seed)
    kwargs = dict(
        model=FlowLM(**TINY_FLOW_LM),
        optimizer=functools.partial(torch.optim.AdamW, lr=3e-3),
        lr_schedule={"warmup_steps": 2},
        ema_decay=0.9,
        latent_stats="cache",
    )
    return TeacherTrainingModule(**{**kwargs, **overrides})


def logged_columns(run_dir: Path) -> set[str]:
    """The metrics a run's ``metrics.csv`` holds a value of."""
    return {
        k for row in csv.DictReader((run_dir / "csv" / "metrics.csv").open()) for k, v in row.items() if v
    }


def tiny_teacher_data(corpus: Path, vae: Path, tmp_path: Path) -> list[str]:
    """Overrides that point a teacher or student run at the tiny corpus and VAE, with its latent
    cache and a ``TINY_VOCAB``-piece tokenizer made under ``tmp_path``."""
    return [
        f"data.data_dir={corpus}",
        "data.train_manifest=train.jsonl",
        "data.valid_manifest=valid.jsonl",
        f"data.vae={vae}",
        f"data.cache_dir={tmp_path / 'latents'}",
        f"data.tokenizer={tmp_path / 'tok' / 'tokenizer.model'}",
        f"data.vocab_size={TINY_VOCAB}",
    ]


def run_stage(entry_point: str, experiment: str, corpus: Path, vae: Path, tmp_path: Path, *extra: str):
    """``<entry_point> experiment=<experiment>`` for 2 steps on the tiny corpus with a tiny VAE,
    samples and checkpoints at step 2; the run directory is ``tmp_path / "run"``."""
    overrides = [
        f"experiment={experiment}",
        *tiny_teacher_data(corpus, vae, tmp_path),
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


def dry_run(script: str, args: list[str], env: dict[str, str]) -> list[list[str]]:
    """The commands ``script`` would run, as argument lists."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "STAGES", "SIZE", "VAE"))}
    result = subprocess.run(
        ["bash", str(ROOT / "recipes" / script), *args],
        capture_output=True, text=True, cwd=ROOT, env={**clean, **env, "DRY_RUN": "1"}, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    commands = [shlex.split(line[2:]) for line in result.stdout.splitlines() if line.startswith("+ ")]
    assert commands, f"{script} printed no command"
    return commands


def eval_item_row(
    item_id: str, errors: int, words: int, sim: float | None = 0.5, quality: float = 3.0
) -> dict:
    """An ``items.jsonl`` row as the evaluation runner writes it, under the ``whisper`` normaliser only:
    ``errors`` word errors in ``words`` reference words (as many character errors in five characters a
    word), a speaker similarity to the prompt (None: silent) and a DNSMOS overall score."""
    return {
        "id": item_id, "wer": {"whisper": errors / words}, "cer": {"whisper": errors / (5 * words)},
        "word_errors": {"whisper": errors}, "reference_words": {"whisper": words},
        "char_errors": {"whisper": errors}, "reference_chars": {"whisper": 5 * words},
        "sim_prompt": sim, "sim_reference": None, "quality": {"dnsmos_ovrl": quality},
    }  # fmt: skip
