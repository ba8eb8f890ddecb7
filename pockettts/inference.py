"""The ``infer.py`` job: speak one text or a text file in a voice, write wav(s), report speed.

``device`` (``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``) says where it runs; ``precision`` unset is
the device's fast path: int8 on a CPU, float32 on a GPU (where bfloat16 and float16 are options).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from pockettts.audio import AudioError, read_audio, save_audio
from pockettts.devices import describe_device, resolve_device, synchronize
from pockettts.models.tts import TextToSpeech, VoiceState
from pockettts.schema import InferConfig
from pockettts.text import TextError

log = logging.getLogger(__name__)


def _texts(cfg: InferConfig) -> list[tuple[str, Path]]:
    if (cfg.text is None) == (cfg.text_file is None):
        raise ValueError("give exactly one of text=... or text_file=...")
    if cfg.text is not None:
        return [(cfg.text, Path(cfg.out))]
    path = Path(cfg.text_file)
    if not path.is_file():
        raise FileNotFoundError(f"text file {path} does not exist")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise TextError(f"text file {path} has no text")
    return [(line, Path(cfg.out) / f"{index:04d}.wav") for index, line in enumerate(lines)]


def _voice(tts: TextToSpeech, cfg: InferConfig) -> VoiceState:
    path = Path(cfg.voice)
    if not path.is_file():
        raise FileNotFoundError(f"voice {path} does not exist")
    if path.suffix == ".safetensors":
        return VoiceState.load(path, tts.flow_lm)
    audio, sample_rate = read_audio(path)
    if audio.shape[-1] > cfg.max_voice_seconds * sample_rate:
        log.warning("voice prompt %s is %.1f s: using its first %.0f s", path, audio.shape[-1] / sample_rate,
                    cfg.max_voice_seconds)  # fmt: skip
    try:
        voice = tts.voice(audio, sample_rate, cfg.max_voice_seconds)
    except AudioError as err:
        raise AudioError(f"voice {path}: {err}") from err
    if cfg.save_voice:
        log.info("voice state saved to %s", voice.save(cfg.save_voice))
    return voice


def run(cfg: InferConfig | DictConfig) -> int:
    """Exit code 0 when every text was spoken; 1 (with the reason logged) otherwise."""
    if isinstance(cfg, DictConfig):  # from Hydra: the schema's dataclasses, ``cfg.sampling`` included
        cfg = OmegaConf.to_object(cfg)
    try:
        device = resolve_device(cfg.device)
        precision = cfg.precision or ("int8" if device.type == "cpu" else "float32")
        tts = TextToSpeech.load(
            cfg.checkpoint, cfg.vae, device, precision=precision, overlap_decoding=cfg.overlap_decoding
        )
        voice = _voice(tts, cfg)
        jobs = _texts(cfg)
    except (AudioError, TextError, FileNotFoundError, ValueError, KeyError) as err:
        log.error("%s", err)
        return 1
    failures = 0
    for text, out in jobs:
        start = time.perf_counter()
        chunks, first_audio = [], None
        try:
            for chunk in tts.stream(text, voice, cfg.sampling):
                if first_audio is None:
                    synchronize(device)
                    first_audio = time.perf_counter() - start
                chunks.append(chunk)
        except TextError as err:
            log.error("text %r: %s", text[:80], err)
            failures += 1
            continue
        synchronize(device)
        elapsed = time.perf_counter() - start
        audio = torch.cat(chunks).cpu() if chunks else torch.zeros(0)
        seconds = audio.shape[-1] / tts.vae.sample_rate
        save_audio(out, audio[None], tts.vae.sample_rate)
        rtf = elapsed / seconds if seconds else float("inf")
        where = f"{torch.get_num_threads()} thr." if device.type == "cpu" else describe_device(device)
        print(
            f"{out}: {seconds:.2f} s of audio in {elapsed:.2f} s (real-time factor {rtf:.3f}, first audio "
            f"after {1000 * (first_audio or 0):.0f} ms, {precision}, {where})"
        )
    return 1 if failures else 0
