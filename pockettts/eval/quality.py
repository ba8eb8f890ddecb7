"""Reference-free speech quality scores (predicted MOS) of generated audio.

- ``"dnsmos"`` (default): Microsoft's DNSMOS P.835 (signal / background / overall) and P.808 ONNX
  models, shipped in the ``speechmos`` wheel; works offline.
- ``"distillmos"``: DistillMOS (weights shipped in its wheel); rates formant-synth speech oddly (it
  scored a noisy espeak clip above the clean one), so prefer DNSMOS
  on the demo corpus.
- ``"utmos"``: UTMOS22 strong learner, the TTS papers' MOS; no installable package ships its
  weights, so it needs ``checkpoint=`` a local TorchScript file (``utmos_scripted.pt`` of
  UTMOS-PyTorch, loaded with torch alone).

Every scorer takes mono audio at any rate and scores its 16 kHz resampling; ``primary`` names the
headline number of its result. Each runs on the ``device`` it is built for (DNSMOS through
onnxruntime's CUDA provider when that is installed, else on the CPU).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from pockettts.audio import mono_waveform, resample
from pockettts.devices import resolve_device
from pockettts.extras import import_eval_module

SCORER_RATE = 16_000  # all three models are 16 kHz


class QualityModelUnavailable(FileNotFoundError):
    """The scorer's weights are not on this machine; the message says what to provide."""


class QualityScorer(Protocol):
    name: str
    primary: str

    def score(self, audio: torch.Tensor, sample_rate: int) -> dict[str, float]:
        """Mono audio ``[T]`` (float, any rate) -> named scores (higher is better)."""
        ...


def _mono_16k(audio: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """``[T]`` or ``[C, T]`` at any rate -> ``[T]`` float32 at 16 kHz, clipped to [-1, 1]."""
    return resample(mono_waveform(audio, "score"), sample_rate, SCORER_RATE).clamp(-1.0, 1.0)


class DNSMOSScorer:
    """DNSMOS from ``speechmos``: clips under 9 s are tiled to 9 s, longer ones scored in 9 s windows
    with a 1 s hop, and the window scores averaged (its reference behaviour)."""

    name = "dnsmos"
    primary = "dnsmos_ovrl"

    def __init__(self, device: str | torch.device = "cpu"):
        dnsmos = import_eval_module("speechmos.dnsmos")
        onnxruntime = import_eval_module("onnxruntime")

        models = Path(dnsmos.__file__).parent / "dnsmos_models"
        providers = onnx_providers(resolve_device(device), onnxruntime.get_available_providers())
        # speechmos's constructor opens its two sessions on onnxruntime's default provider (the CPU);
        # they are opened here instead, with the providers of ``device``
        self.model = object.__new__(dnsmos.DNSMOS)
        self.model.onnx_sess, self.model.p808_onnx_sess = (
            onnxruntime.InferenceSession(str(models / name), providers=providers)
            for name in ("sig_bak_ovr.onnx", "model_v8.onnx")
        )

    def score(self, audio: torch.Tensor, sample_rate: int) -> dict[str, float]:
        wav = _mono_16k(audio, sample_rate).numpy().astype(np.float32)
        result = self.model(wav, SCORER_RATE, False)
        return {
            f"dnsmos_{key.removesuffix('_mos')}": float(result[key])
            for key in ("ovrl_mos", "sig_mos", "bak_mos", "p808_mos")
        }


class DistillMOSScorer:
    """DistillMOS v7 (``distillmos``): MOS in [1, 5], averaged over its own 7.7 s windows."""

    name = "distillmos"
    primary = "distillmos"

    def __init__(self, device: str | torch.device = "cpu"):
        distillmos = import_eval_module("distillmos")

        self.device = resolve_device(device)
        with contextlib.redirect_stdout(io.StringIO()):  # it prints the weights path on load
            self.model = distillmos.ConvTransformerSQAModel().to(self.device).eval()

    @torch.inference_mode()
    def score(self, audio: torch.Tensor, sample_rate: int) -> dict[str, float]:
        wav = _mono_16k(audio, sample_rate).to(self.device)
        return {"distillmos": float(self.model(wav[None])[0, 0])}


class UTMOSScorer:
    """UTMOS22 strong from a local TorchScript file (input ``[B, 1, T]`` at 16 kHz -> ``[B]`` MOS).

    Scored one clip at a time: padding a batch shifts UTMOS.
    """

    name = "utmos"
    primary = "utmos"

    def __init__(self, checkpoint: str | Path, device: str | torch.device = "cpu"):
        self.device = resolve_device(device)
        with warnings.catch_warnings():  # torch deprecates TorchScript, the format this model ships in
            warnings.simplefilter("ignore", FutureWarning)
            self.model = torch.jit.load(str(checkpoint), map_location=self.device).eval()

    @torch.inference_mode()
    def score(self, audio: torch.Tensor, sample_rate: int) -> dict[str, float]:
        wav = _mono_16k(audio, sample_rate).to(self.device)
        return {"utmos": float(self.model(wav[None, None]).reshape(-1)[0])}


SCORERS = ("dnsmos", "distillmos", "utmos")


def onnx_providers(device: torch.device, available: list[str]) -> list[str | tuple[str, dict[str, int]]]:
    """onnxruntime execution providers for ``device``: its GPU first when the CUDA provider is
    ``available`` (onnxruntime-gpu), the CPU always."""
    if device.type == "cuda" and "CUDAExecutionProvider" in available:
        index = device.index if device.index is not None else torch.cuda.current_device()
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def build_quality_scorer(
    name: str = "dnsmos", checkpoint: str | None = None, device: str | torch.device = "cpu"
) -> QualityScorer:
    """The quality scorer called ``name`` (see the module docstring) on ``device`` (``auto``,
    ``cpu``, ``cuda``, ``cuda:N``)."""
    device = resolve_device(device)
    if name in ("dnsmos", "distillmos"):
        if checkpoint is not None:
            raise ValueError(f"{name} uses the weights in its package; do not pass a checkpoint")
        return DNSMOSScorer(device) if name == "dnsmos" else DistillMOSScorer(device)
    if name == "utmos":
        hint = (
            "UTMOS weights are not available offline: no installable package ships them. Pass "
            "checkpoint=<local utmos_scripted.pt> (the TorchScript UTMOS22 strong model of UTMOS-PyTorch, "
            "downloaded where a network exists), or use quality=dnsmos"
        )
        if checkpoint is None:
            raise QualityModelUnavailable(hint)
        if not Path(checkpoint).is_file():
            raise QualityModelUnavailable(f"UTMOS checkpoint not found: {checkpoint}. {hint}")
        return UTMOSScorer(checkpoint, device)
    raise ValueError(f"unknown quality scorer {name!r}; choose one of {', '.join(SCORERS)}")
