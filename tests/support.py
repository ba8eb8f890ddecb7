"""Helpers and constants shared by test modules (fixtures live in ``conftest.py`` files): paths, tiny
model sizes, synthetic signals, a quiet CPU trainer, crash simulation, streaming checks, the
stage entry points run for two steps and the pocket-tts parity harness."""

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


def run_vae_stage(experiment: str, corpus: Path, run_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    """``train.py experiment=<experiment>`` (a codec preset) for 2 steps on 0.32 s crops of the tiny
    corpus in float32, samples and checkpoints at step 2, in ``run_dir``; the finished process."""
    overrides = [
        f"experiment={experiment}",
        "data=manifest_crops",
        f"data.data_dir={corpus}",
        "data.train_manifest=train.jsonl",
        "data.valid_manifest=valid.jsonl",
        "data.num_workers=0",
        "data.batch_size=2",
        "data.crop_seconds=0.32",
        "data.valid_crop_seconds=0.64",
        "trainer.max_steps=2",
        "trainer.val_check_interval=2",
        "trainer.limit_val_batches=1",
        "trainer.precision=32-true",
        "callbacks.audio_samples.every_n_steps=2",
        "callbacks.audio_samples.num_clips=1",
        "callbacks.model_checkpoint.every_n_train_steps=2",
        f"hydra.run.dir={run_dir}",
        f"paths.log_dir={run_dir.parent}",
        *extra,
    ]
    command = [sys.executable, str(ROOT / "train.py"), *overrides]
    return subprocess.run(command, capture_output=True, text=True, cwd=run_dir.parent)


def speak_from_export(export: Path, corpus: Path, frames: int = 8):
    """Load ``export`` as a ``TextToSpeech`` (its tokenizer and codec beside or recorded) and speak a
    sentence for ``frames`` frames in the voice of the corpus's first test item; checks the shapes and
    returns the generation."""
    from pockettts.audio import SAMPLE_RATE, load_audio
    from pockettts.data.manifest import read_manifest
    from pockettts.models.sampling import SamplingOptions
    from pockettts.models.tts import TextToSpeech

    tts = TextToSpeech.load(export, overlap_decoding=False)
    item = read_manifest(corpus / "test.jsonl")[0]
    voice = tts.voice(load_audio(item.resolve_audio(corpus)), SAMPLE_RATE)
    speech = tts.generate("A short sentence.", voice, SamplingOptions(max_frames=frames, seed=3))
    assert speech.latents.shape == (frames, tts.flow_lm.latent_dim) and torch.isfinite(speech.latents).all()
    assert speech.audio.numel() == frames * tts.vae.frame_size
    return speech


def compose_experiment(entry: str, experiment: str, *overrides: str):
    """The config ``train.py`` / ``distill.py`` (``entry``: ``train`` or ``distill``) composes for
    ``experiment=<experiment>`` and ``overrides`` (unresolved: paths resolve in a Hydra run only)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from pockettts.schema import register_schemas

    register_schemas()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(entry, overrides=[f"experiment={experiment}", *overrides])


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


# --- parity with the pocket-tts package (a test dependency, imported where a helper needs it) -----


def pocket_parity_config(
    name: str, tokenizer_path: Path, vocab_size: int, num_layers: int | None = None
) -> dict:
    """A yaml packaged with pocket-tts as a dict that builds offline: no weight files (random weights),
    a local SentencePiece tokenizer of ``vocab_size`` pieces and optionally fewer backbone layers."""
    import yaml
    from pocket_tts.utils.config import CONFIGS_DIR

    config = yaml.safe_load((CONFIGS_DIR / f"{name}.yaml").read_text())
    config.pop("weights_path", None)
    config.pop("weights_path_without_voice_cloning", None)
    if num_layers is not None:
        config["flow_lm"]["transformer"]["num_layers"] = num_layers
    config["flow_lm"]["lookup_table"].update(
        n_bins=vocab_size, tokenizer="sentencepiece", tokenizer_path=str(tokenizer_path)
    )
    config["flow_lm"]["weights_path"] = config["mimi"]["weights_path"] = None
    return config


def pocket_model(config: dict):
    """pocket-tts's ``TTSModel`` as its own loader builds it from ``config`` (the weights of its
    ``weights_path``, loaded strictly; random without one), in eval mode."""
    from pocket_tts.models.tts_model import TTSModel
    from pocket_tts.utils.config import Config

    model = TTSModel._from_pydantic_config_with_weights(
        Config(**config), temp=0.3, sampler_decode_steps=1, noise_clamp=None, eos_threshold=-4.0
    )
    return model.eval()


def pocket_reference(config: dict, seed: int = 0):
    """pocket-tts's ``TTSModel`` from ``config`` with random weights that all matter, in eval mode."""
    torch.manual_seed(seed)
    reference = pocket_model(config)
    flow_lm = reference.flow_lm
    with torch.no_grad():  # zero-initialised parts (voice projection, head output) would hide bugs
        flow_lm.speaker_proj_weight.normal_(0.0, 0.05)
        for name, param in flow_lm.named_parameters():
            if name.startswith("flow_net."):
                param.normal_(0.0, 0.05)
        flow_lm.emb_mean.normal_()
        flow_lm.emb_std.uniform_(0.5, 2.0)
        # Random models are chaotic: float rounding (1e-6) would double every few frames through the
        # fed-back latents. A weaker feedback keeps it bounded; a wrong feedback still shows.
        flow_lm.input_linear.weight.mul_(0.1)
        flow_lm.out_eos.weight.zero_()
        flow_lm.out_eos.bias.fill_(-10.0)  # EOS never fires: every chunk runs its frame budget
    return reference.eval()


def save_pocket_model_file(reference, path: Path) -> Path:
    """``reference``'s weights as a released model file (``flow_lm.*`` and ``mimi.*`` tensors)."""
    from safetensors.torch import save_file

    tensors = {f"flow_lm.{k}": v for k, v in reference.flow_lm.state_dict().items()}
    tensors.update({f"mimi.{k}": v for k, v in reference.mimi.state_dict().items()})
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return path


def pocket_generation(reference, voice_state, text: str, seed: int, max_tokens: int):
    """What ``reference`` generates after ``torch.manual_seed(seed)``: its latents ``[F, D]`` (raw, as
    its decoder reads them) and its audio, decoded one frame per call as our streaming does."""
    latents = []
    decode = reference.mimi.decode_from_latent

    def recording_decode(latent, state):
        latents.append(latent.clone())
        return decode(latent, state)

    reference.mimi.decode_from_latent = recording_decode
    reference.max_decoder_frames_per_call = 1  # one frame per call: same arithmetic as streaming
    try:
        torch.manual_seed(seed)
        audio = reference.generate_audio(voice_state, text, max_tokens=max_tokens, copy_state=True)
    finally:
        del reference.mimi.decode_from_latent
    return torch.cat(latents, dim=1)[0], audio


def assert_same_voice_state(reference, ours, prompt: torch.Tensor) -> None:
    """Our voice state for ``prompt`` ``[1, T]`` holds the reference's keys and values, layer by layer."""
    reference_state = reference.get_state_for_audio_prompt(prompt)
    voice = ours.voice(prompt, 24_000)
    caches = [value for value in reference_state.values() if "cache" in value]
    ours_layers = voice.backbone["transformer"]
    assert len(caches) == len(ours.flow_lm.transformer.layers)
    for index, cache in enumerate(caches):
        attention = ours_layers[f"layers.{index}"]["self_attn"]
        length = int(attention["length"])
        opening = 0 if ours.flow_lm.bos_before_voice is None else 1  # v1 models have none
        assert int(cache["offset"].view(-1)[0]) == length == voice.latents.shape[0] + opening
        for slot, name in enumerate(("keys", "values")):
            theirs = cache["cache"][slot, 0, :length]  # [T, H_kv, Dh]
            mine = attention[name][0, :, :length].transpose(0, 1)
            assert mine.shape == theirs.shape
            torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=1e-4)


def assert_same_generation(reference, ours, prompt: torch.Tensor, text: str, seed: int, max_tokens: int):
    """``ours`` (a ``TextToSpeech``) speaks ``text`` in the voice of ``prompt`` ``[1, T]`` with the
    latents and audio of ``reference`` for the same seed; returns our generation."""
    from pockettts.models.sampling import SamplingOptions

    reference_latents, reference_audio = pocket_generation(
        reference, reference.get_state_for_audio_prompt(prompt), text, seed=seed, max_tokens=max_tokens
    )
    options = SamplingOptions(seed=seed, max_tokens=max_tokens)
    generation = ours.generate(text, ours.voice(prompt, 24_000), options)
    assert generation.latents.shape == reference_latents.shape
    torch.testing.assert_close(generation.latents, reference_latents, atol=1e-4, rtol=1e-4)
    assert generation.audio.shape == reference_audio.shape
    torch.testing.assert_close(generation.audio, reference_audio, atol=1e-4, rtol=0)
    return generation


# --- generation heads --------------------------------------------------------------------------


def randomise(module: torch.nn.Module, seed: int) -> None:
    """Every parameter random, scaled by its fan-in (the default init zeroes the modulations and the
    output, which would hide mistakes)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            fan_in = param.shape[1] if param.dim() == 2 else 4
            param.copy_(torch.randn(param.shape, generator=generator) / math.sqrt(fan_in))
