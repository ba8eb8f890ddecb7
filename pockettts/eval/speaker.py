"""Speaker similarity: pluggable speaker embedders and the cosine between their embeddings.

SIM numbers are only comparable between runs that used the same embedder, so every embedder
carries a ``name`` that results should record.

- ``"resemblyzer"`` (default): the GE2E encoder whose weights ship inside the ``resemblyzer`` wheel,
  so it works offline; 256-d.
- ``"wavlm_sv"``: Hugging Face ``WavLMForXVector`` (e.g. ``microsoft/wavlm-base-plus-sv``) from a
  local directory; 512-d x-vectors, the embedder of Kyutai's open recipe (which compares to the
  target's real recording, so its numbers are not the literature's SIM-o).
- ``"wavlm_ecapa"``: WavLM Large + ECAPA-TDNN from ``wavlm_large_finetune.pth``
  (:mod:`pockettts.eval.wavlm_ecapa`); 256-d, the SIM-o of Seed-TTS-eval, F5-TTS and the papers
  that report against them.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F

from pockettts.audio import is_silent, loudness_normalize, mono_waveform, resample
from pockettts.devices import resolve_device
from pockettts.eval.wavlm_ecapa import WEIGHTS_HINT, load_wavlm_ecapa
from pockettts.extras import import_eval_module

EMBEDDER_RATE = 16_000  # every embedder works on 16 kHz audio


class SpeakerModelUnavailable(FileNotFoundError):
    """The embedder's weights are not on this machine; the message says what to provide."""


class SpeakerEmbedder(Protocol):
    name: str

    def embed(self, audio: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """Mono audio ``[T]`` (float, any rate) -> L2-normalised embedding ``[D]``.

        Raises ``ValueError`` for empty or silent audio (see :func:`pockettts.audio.is_silent`).
        """
        ...


def cosine_similarity(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine of two embeddings ``[D]`` (normalised or not)."""
    if a.shape != b.shape or a.dim() != 1:
        raise ValueError(
            f"expected two embeddings [D] of one size, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    return float(F.cosine_similarity(a.float(), b.float(), dim=0))


def _mono_16k(audio: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """``[T]`` or ``[C, T]`` audio at any rate -> ``[T]`` float32 at 16 kHz; rejects empty input."""
    audio = mono_waveform(audio, "embed")
    if is_silent(audio[None], sample_rate):
        # a silent output has no voice to compare; callers count it as a failure instead
        raise ValueError("cannot embed silent audio (no 20 ms frame above -50 dBFS)")
    return resample(audio, sample_rate, EMBEDDER_RATE)


class ResemblyzerEmbedder:
    """resemblyzer's GE2E voice encoder (weights shipped in its wheel).

    Input is loudness-normalised (-23 LUFS), then resemblyzer's own preprocessing runs (webrtcvad
    trimming of long pauses); audio with no voiced window is embedded untrimmed rather than rejected.
    """

    name = "resemblyzer"

    def __init__(self, device: str | torch.device = "cpu"):
        device = resolve_device(device)
        with warnings.catch_warnings():  # webrtcvad imports pkg_resources, which warns of its own end
            warnings.filterwarnings("ignore", "pkg_resources is deprecated", UserWarning)
            resemblyzer = import_eval_module("resemblyzer")
        self.encoder = resemblyzer.VoiceEncoder(device=device, verbose=False)

    def embed(self, audio: torch.Tensor, sample_rate: int) -> torch.Tensor:
        from resemblyzer import preprocess_wav
        from resemblyzer.audio import normalize_volume
        from resemblyzer.hparams import audio_norm_target_dBFS

        # one loudness for every input, so SIM does not depend on how loud the model speaks
        wav = (
            loudness_normalize(_mono_16k(audio, sample_rate)[None], EMBEDDER_RATE)[0].clamp(-1.0, 1.0).numpy()
        )
        trimmed = preprocess_wav(wav)  # already at its 16 kHz, so no source_sr: no second resampling
        if trimmed.size < EMBEDDER_RATE // 10:
            trimmed = normalize_volume(wav, audio_norm_target_dBFS, increase_only=True)
        embedding = torch.from_numpy(self.encoder.embed_utterance(trimmed)).float()
        return F.normalize(embedding, dim=0)


class WavLMXVectorEmbedder:
    """``transformers.WavLMForXVector`` from a local directory (``config.json``, weights and
    ``preprocessor_config.json``, as in ``microsoft/wavlm-base-plus-sv``)."""

    name = "wavlm_sv"

    def __init__(self, checkpoint: str | Path, device: str | torch.device = "cpu"):
        transformers = import_eval_module("transformers")

        folder = Path(checkpoint)
        self.device = resolve_device(device)
        self.extractor = transformers.AutoFeatureExtractor.from_pretrained(folder, local_files_only=True)
        self.model = (
            transformers.WavLMForXVector.from_pretrained(folder, local_files_only=True).to(self.device).eval()
        )
        if getattr(self.extractor, "sampling_rate", EMBEDDER_RATE) != EMBEDDER_RATE:
            raise ValueError(
                f"{folder}: expected a 16 kHz feature extractor, got {self.extractor.sampling_rate}"
            )

    @torch.inference_mode()
    def embed(self, audio: torch.Tensor, sample_rate: int) -> torch.Tensor:
        wav = _mono_16k(audio, sample_rate).numpy()
        inputs = self.extractor(wav, sampling_rate=EMBEDDER_RATE, return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        embedding = self.model(**inputs).embeddings[0].float().cpu()
        return F.normalize(embedding, dim=0)


class WavLMEcapaEmbedder:
    """UniSpeech's WavLM Large + ECAPA-TDNN speaker-verification model from ``wavlm_large_finetune.pth``
    (see :mod:`pockettts.eval.wavlm_ecapa`); ``wavlm`` replaces the WavLM Large it is built on
    (a small torchaudio WavLM in tests)."""

    name = "wavlm_ecapa"

    def __init__(self, checkpoint: str | Path, device: str | torch.device = "cpu", wavlm=None):
        self.device = resolve_device(device)
        self.model = load_wavlm_ecapa(checkpoint, wavlm).to(self.device)

    @torch.inference_mode()
    def embed(self, audio: torch.Tensor, sample_rate: int) -> torch.Tensor:
        wav = _mono_16k(audio, sample_rate).to(self.device)
        return F.normalize(self.model(wav[None])[0].float().cpu(), dim=0)


def _checked_hf_folder(name: str, checkpoint: str | Path | None) -> Path:
    hint = (
        f"speaker embedder {name!r} needs checkpoint=<local directory of microsoft/wavlm-base-plus-sv "
        "(config.json, model weights, preprocessor_config.json)>; no installable package ships these "
        "weights, so download them where a network exists"
    )
    if checkpoint is None:
        raise SpeakerModelUnavailable(hint)
    folder = Path(checkpoint)
    if not (folder / "config.json").is_file():
        raise SpeakerModelUnavailable(f"{folder} has no config.json: {hint}")
    return folder


def _checked_file(name: str, checkpoint: str | Path | None) -> Path:
    hint = f"speaker embedder {name!r} needs speaker_checkpoint=<local {WEIGHTS_HINT}>"
    if checkpoint is None:
        raise SpeakerModelUnavailable(hint)
    if not Path(checkpoint).is_file():
        raise SpeakerModelUnavailable(f"{checkpoint} does not exist: {hint}")
    return Path(checkpoint)


EMBEDDERS = ("resemblyzer", "wavlm_sv", "wavlm_ecapa")


@functools.cache
def _resemblyzer(device: torch.device) -> ResemblyzerEmbedder:
    return ResemblyzerEmbedder(device)


def build_speaker_embedder(
    name: str = "resemblyzer", checkpoint: str | None = None, device: str | torch.device = "cpu"
) -> SpeakerEmbedder:
    """The speaker embedder called ``name`` (see the module docstring) on ``device`` (``auto``, ``cpu``,
    ``cuda``, ``cuda:N``); ``checkpoint`` for those whose weights are not shipped. resemblyzer is
    loaded once per process and device, and shared."""
    device = resolve_device(device)
    if name == "resemblyzer":
        if checkpoint is not None:
            raise ValueError("resemblyzer uses the weights in its package; do not pass a checkpoint")
        return _resemblyzer(device)
    if name == "wavlm_sv":
        return WavLMXVectorEmbedder(_checked_hf_folder(name, checkpoint), device)
    if name == "wavlm_ecapa":
        return WavLMEcapaEmbedder(_checked_file(name, checkpoint), device)
    raise ValueError(f"unknown speaker embedder {name!r}; choose one of {', '.join(EMBEDDERS)}")
