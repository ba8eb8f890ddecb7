"""The one place audio enters or leaves the project.

Every stage reads audio through :func:`load_audio`, which decodes, downmixes to mono, resamples to
the model rate (24 kHz by default) and loudness-normalises, so training, caching, evaluation and
inference see identical waveforms. Files are read and written with ``soundfile`` (wav, flac, ogg,
mp3); ``torchaudio`` provides the resampler and the ITU-R BS.1770 loudness meter.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from pockettts.io import atomic_write

SAMPLE_RATE = 24_000
TARGET_LUFS = -23.0
PEAK_CEILING_DB = -1.0
# BS.1770 gating blocks are 400 ms long; shorter clips fall back to RMS loudness.
_MIN_LOUDNESS_SECONDS = 0.4

AudioSource = str | os.PathLike | bytes


class AudioError(ValueError):
    """Audio that cannot be used; the message names the file or item."""


@dataclass(frozen=True)
class AudioInfo:
    sample_rate: int
    num_frames: int
    channels: int

    @property
    def duration(self) -> float:
        return self.num_frames / self.sample_rate


def _describe(source: AudioSource) -> str:
    return f"<{len(source)} bytes>" if isinstance(source, bytes) else str(source)


def _open_target(source: AudioSource):
    return io.BytesIO(source) if isinstance(source, bytes) else str(source)


def audio_info(source: AudioSource) -> AudioInfo:
    """Header facts of an audio file or in-memory encoded audio, without decoding it."""
    if not isinstance(source, bytes) and not Path(source).is_file():
        raise AudioError(f"audio file not found: {source}")
    try:
        info = sf.info(_open_target(source))
    except Exception as err:  # soundfile raises several types for corrupt data
        raise AudioError(f"unreadable audio {_describe(source)}: {err}") from err
    return AudioInfo(int(info.samplerate), int(info.frames), int(info.channels))


def read_audio(
    source: AudioSource, offset: float = 0.0, duration: float | None = None
) -> tuple[torch.Tensor, int]:
    """Decode audio as stored, without any conversion.

    Args:
        source: a file path or encoded bytes (wav/flac/ogg/mp3).
        offset: start of the window to read, in seconds.
        duration: length of the window in seconds; ``None`` reads to the end.

    Returns:
        ``(wav [C, T] float32 in [-1, 1], sample_rate)``.
    """
    info = audio_info(source)
    start = int(round(offset * info.sample_rate))
    frames = -1 if duration is None else int(round(duration * info.sample_rate))
    if start < 0 or start >= max(info.num_frames, 1):
        raise AudioError(f"offset {offset:.3f}s is outside {_describe(source)} ({info.duration:.3f}s long)")
    if frames >= 0 and start + frames > info.num_frames + 1:
        raise AudioError(
            f"window {offset:.3f}s+{duration:.3f}s runs past the end of {_describe(source)} "
            f"({info.duration:.3f}s long)"
        )
    try:
        data, sample_rate = sf.read(
            _open_target(source), start=start, frames=frames, dtype="float32", always_2d=True
        )
    except Exception as err:
        raise AudioError(f"unreadable audio {_describe(source)}: {err}") from err
    if data.shape[0] == 0:
        raise AudioError(f"empty audio {_describe(source)}")
    wav = torch.from_numpy(np.ascontiguousarray(data.T))
    if not torch.isfinite(wav).all():
        raise AudioError(f"audio {_describe(source)} contains NaN or infinite samples")
    return wav, int(sample_rate)


def to_mono(wav: torch.Tensor) -> torch.Tensor:
    """``[C, T]`` -> ``[1, T]`` by averaging channels."""
    return wav.mean(dim=0, keepdim=True) if wav.shape[0] > 1 else wav


def resample(wav: torch.Tensor, orig_sr: int, new_sr: int) -> torch.Tensor:
    """Band-limited resampling along the last axis (``[..., T]``)."""
    if orig_sr == new_sr:
        return wav
    return AF.resample(wav, orig_sr, new_sr)


def loudness_db(wav: torch.Tensor, sample_rate: int) -> float:
    """Integrated loudness of ``[C, T]`` audio in LUFS (RMS dBFS for clips under 400 ms).

    Returns ``-inf`` for digital silence.
    """
    if wav.shape[-1] >= _MIN_LOUDNESS_SECONDS * sample_rate:
        value = float(AF.loudness(wav, sample_rate))
        if np.isfinite(value):
            return value
        # Gating removed every block: the clip is (near) silent.
    rms = float(wav.pow(2).mean().sqrt())
    return 20.0 * np.log10(rms) if rms > 0 else float("-inf")


def loudness_normalize(
    wav: torch.Tensor,
    sample_rate: int,
    target_lufs: float = TARGET_LUFS,
    peak_ceiling_db: float = PEAK_CEILING_DB,
) -> torch.Tensor:
    """Scale ``[C, T]`` audio to ``target_lufs``, then lower it if its peak exceeds the ceiling.

    Silent audio is returned unchanged (there is no gain that makes it audible).
    """
    current = loudness_db(wav, sample_rate)
    if not np.isfinite(current):
        return wav
    gain = 10.0 ** ((target_lufs - current) / 20.0)
    peak = float(wav.abs().max()) * gain
    ceiling = 10.0 ** (peak_ceiling_db / 20.0)
    if peak > ceiling:
        gain *= ceiling / peak
    return wav * gain


def peak_frame_db(wav: torch.Tensor, sample_rate: int, frame_seconds: float = 0.02) -> float:
    """Loudest 20 ms frame of ``[C, T]`` audio, in dBFS RMS; ``-inf`` for digital silence."""
    mono = to_mono(wav)[0]
    hop = max(1, int(frame_seconds * sample_rate))
    if mono.numel() < hop:
        energy = mono.pow(2).mean()
    else:
        energy = mono[: mono.numel() // hop * hop].view(-1, hop).pow(2).mean(dim=1).max()
    return 10.0 * float(torch.log10(energy)) if energy > 0 else float("-inf")


def is_silent(wav: torch.Tensor, sample_rate: int, threshold_db: float = -50.0) -> bool:
    """True when no 20 ms frame of ``wav`` rises above ``threshold_db`` dBFS."""
    return peak_frame_db(wav, sample_rate) < threshold_db


def mono_waveform(audio: torch.Tensor, purpose: str) -> torch.Tensor:
    """``[T]`` or ``[C, T]`` -> ``[T]`` float32 on the CPU; a clear error for other shapes or empty
    audio (``purpose`` names what was being done, e.g. "score")."""
    if audio.dim() == 2:
        audio = to_mono(audio)[0]
    if audio.dim() != 1:
        raise ValueError(f"expected audio [T] or [C, T], got shape {tuple(audio.shape)}")
    if audio.numel() == 0:
        raise ValueError(f"cannot {purpose} empty audio")
    return audio.detach().float().cpu()


def end_on_pause(
    wav: torch.Tensor,
    sample_rate: int,
    pause_seconds: float = 0.08,
    fade_seconds: float = 0.02,
    floor_db: float = 35.0,
) -> torch.Tensor:
    """A voice prompt ``[..., T]`` that ends on exactly ``pause_seconds`` of silence (Pocket TTS's rule).

    Training prompts are cut in the pause between two words: a prompt that stops mid-word makes the
    model continue that word, one that trails a long silence delays the onset. Trailing 20 ms
    frames more than ``floor_db`` below the loudest are cut, the last ``fade_seconds`` faded out,
    and ``pause_seconds`` of zeros appended.
    """
    frame = max(1, int(0.02 * sample_rate))
    frames = wav.shape[-1] // frame
    if frames == 0:
        return wav
    energy = wav[..., : frames * frame].reshape(-1, frames, frame).square().mean(dim=(0, 2))
    level_db = 10 * torch.log10(energy + 1e-24)  # 20·log10(rms) written on the energy
    last_loud = int(torch.nonzero(level_db > level_db.max() - floor_db).max())
    end = (last_loud + 1) * frame
    kept = wav[..., :end].clone()
    fade = min(int(fade_seconds * sample_rate), end)
    kept[..., end - fade :] *= torch.linspace(1, 0, fade, dtype=wav.dtype, device=wav.device)
    pause = wav.new_zeros(*wav.shape[:-1], int(pause_seconds * sample_rate))
    return torch.cat([kept, pause], dim=-1)


def load_audio(
    source: AudioSource,
    sample_rate: int = SAMPLE_RATE,
    offset: float = 0.0,
    duration: float | None = None,
    target_lufs: float | None = TARGET_LUFS,
) -> torch.Tensor:
    """Decode, downmix, resample and loudness-normalise: the model's view of a file.

    Args:
        source: file path or encoded bytes.
        sample_rate: output rate (24 kHz for every model in this project).
        offset, duration: window in seconds, in the file's own time axis.
        target_lufs: loudness target; ``None`` keeps the original level.

    Returns:
        ``[1, T]`` float32 waveform at ``sample_rate``.
    """
    wav, file_rate = read_audio(source, offset, duration)
    wav = resample(to_mono(wav), file_rate, sample_rate)
    if target_lufs is not None:
        wav = loudness_normalize(wav, sample_rate, target_lufs)
    return wav.contiguous()


# Suffix -> (container, encoding) that ``save_audio`` writes: lossless 16-bit, or Opus (a listening copy
# a fiftieth of the size, which browsers play).
AUDIO_FORMATS = {".wav": ("WAV", "PCM_16"), ".flac": ("FLAC", "PCM_16"), ".ogg": ("OGG", "OPUS")}


def save_audio(path: str | os.PathLike, wav: torch.Tensor, sample_rate: int) -> Path:
    """Write ``[C, T]`` or ``[T]`` audio (format from the suffix: ``AUDIO_FORMATS``), atomically
    (``pockettts.io.atomic_write``: an interrupted run leaves no truncated file).
    """
    path = Path(path)
    data = wav.detach().float().cpu()
    data = data[None] if data.dim() == 1 else data
    if data.dim() != 2:
        raise ValueError(f"expected audio [C, T] or [T], got shape {tuple(wav.shape)}")
    fmt = AUDIO_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(
            f"unsupported audio suffix {path.suffix!r} for {path} (use {', '.join(AUDIO_FORMATS)})"
        )
    samples = data.clamp(-1, 1).T.numpy()
    return atomic_write(path, lambda tmp: sf.write(tmp, samples, sample_rate, format=fmt[0], subtype=fmt[1]))
