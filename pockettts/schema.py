"""Structured schemas for the top level of each entry point's config.

Registered with Hydra's ConfigStore and listed first in each ``configs/<task>.yaml`` defaults, so
a misspelt top-level key (in a config file or on the command line) is an error, not a silent
no-op. Nodes with a ``_target_`` are checked by their constructor's signature at instantiation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore

from pockettts.models.sampling import SamplingOptions


@dataclass
class PathsConfig:
    root_dir: str = "."
    data_dir: str = "data"
    log_dir: str = "logs"
    output_dir: str = "."


@dataclass
class RunConfig:
    """Keys shared by every entry point."""

    task_name: str = "run"
    tags: list[str] = field(default_factory=list)
    paths: PathsConfig = field(default_factory=PathsConfig)
    data: Any = None
    model: Any = None
    trainer: Any = None
    logger: Any = None
    callbacks: Any = None


@dataclass
class TrainConfig(RunConfig):
    task_name: str = "train"
    seed: int = 1234  # Lightning's seed_everything; data and model nodes take theirs from it
    ckpt_path: str | None = None  # resume: weights, optimisers, step, data position, RNG
    run_test: bool = False


@dataclass
class DistillConfig(TrainConfig):
    task_name: str = "distill"
    teacher: str = "???"


@dataclass
class GenerationConfig(RunConfig):
    """What ``eval.py`` and ``infer.py`` share: the model, the voice prompt's length, how speech is
    sampled (``sampling.temperature=0.5`` on the command line), and where everything runs
    (``device``: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``, see ``pockettts.devices``)."""

    checkpoint: str = "???"
    vae: str | None = None
    max_voice_seconds: float = 30.0
    sampling: SamplingOptions = field(default_factory=SamplingOptions)
    precision: str = "float32"
    device: str = "cpu"


@dataclass
class EvalConfig(GenerationConfig):
    """``eval.py``: the knobs of ``pockettts.eval.runner`` (documented in ``configs/eval.yaml``)."""

    task_name: str = "eval"
    testset: str = "demo"
    testset_options: dict[str, Any] = field(default_factory=dict)
    max_items: int | None = None
    results_root: str = "logs/eval"
    whisper: str = "checkpoints/whisper/tiny.en.pt"
    language: str | None = "en"
    beam_size: int | None = None
    loop_guard: bool = False
    asr_batch_size: int = 16
    generation_batch_size: int | None = None  # None: 1 on a CPU, asr_batch_size on a GPU
    normalizers: list[str] = field(default_factory=lambda: ["whisper", "plain"])
    speaker_embedder: str | None = "resemblyzer"
    speaker_checkpoint: str | None = None
    quality_scorer: str | None = "dnsmos"
    quality_checkpoint: str | None = None


@dataclass
class InferConfig(GenerationConfig):
    task_name: str = "infer"
    text: str | None = None
    text_file: str | None = None
    voice: str = "???"
    out: str = "out.wav"
    save_voice: str | None = None
    precision: str | None = None  # None: int8 on a CPU, float32 on a GPU
    overlap_decoding: bool = True


def register_schemas() -> None:
    store = ConfigStore.instance()
    for name, node in (
        ("train_schema", TrainConfig),
        ("distill_schema", DistillConfig),
        ("eval_schema", EvalConfig),
        ("infer_schema", InferConfig),
    ):
        store.store(name=name, node=node)
