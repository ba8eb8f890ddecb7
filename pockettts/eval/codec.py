"""Reconstruction quality of a VAE over a manifest: how far is ``decode(encode(x))`` from ``x``?

The mean 80-mel log-mel L1 distance (``pockettts.losses.spectral.mel_distance``), lower is better,
and the clip-level SI-SDR. With a Whisper model it also transcribes every original clip and its
reconstruction: the WER of the originals is the floor the codec is judged against (Whisper base:
about 5% on the demo voices). Command line: ``pockettts-tools codec``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm import tqdm

from pockettts.audio import load_audio
from pockettts.data.manifest import read_manifest
from pockettts.eval.wer import word_error_rate
from pockettts.losses.spectral import mel_distance
from pockettts.models.vae import AudioVAE
from pockettts.whisper import WhisperASR


def si_sdr(estimate: torch.Tensor, reference: torch.Tensor, eps: float = 1e-8) -> float:
    """Scale-invariant signal-to-distortion ratio in dB of two ``[T]`` signals."""
    reference = reference - reference.mean()
    estimate = estimate - estimate.mean()
    scale = (estimate @ reference) / (reference @ reference + eps)
    target = scale * reference
    return float(10 * torch.log10(target.pow(2).sum() / ((estimate - target).pow(2).sum() + eps) + eps))


@torch.no_grad()
def codec_report(
    vae: AudioVAE, manifest: str | Path, limit: int | None = None, asr: WhisperASR | None = None
) -> dict[str, object]:
    """Mean mel distance and SI-SDR of ``vae``'s reconstructions of (up to ``limit``) manifest items.

    With ``asr``, also the corpus WER of the originals and of the reconstructions against the
    manifest texts, and every transcript (``transcripts``: id, text, original, reconstruction).
    """
    root = Path(manifest).parent
    items = list(read_manifest(manifest))[:limit]
    if not items:
        raise ValueError(f"{manifest} has no items")
    distances, sdrs, transcripts = [], [], []
    for item in tqdm(items, desc="reconstructing", leave=False):
        audio = load_audio(
            item.resolve_audio(root), vae.sample_rate, offset=item.offset, duration=item.duration
        )[None]
        rebuilt = vae.decode_features(vae.encode_mean(audio))[..., : audio.shape[-1]]
        distances.append(float(mel_distance(rebuilt, audio, vae.sample_rate)))
        sdrs.append(si_sdr(rebuilt[0, 0], audio[0, 0]))
        if asr is not None:
            transcripts.append({
                "id": item.id, "text": item.text,
                "original": asr.transcribe(audio[0, 0], vae.sample_rate),
                "reconstruction": asr.transcribe(rebuilt[0, 0], vae.sample_rate),
            })  # fmt: skip
    report: dict[str, object] = {
        "items": len(items),
        "mel_distance": sum(distances) / len(items),
        "si_sdr_db": sum(sdrs) / len(items),
    }
    if asr is not None:
        texts = [row["text"] for row in transcripts]
        for which in ("original", "reconstruction"):
            report[f"{which}_wer"] = word_error_rate(texts, [row[which] for row in transcripts])["wer"]
        report["whisper"] = asr.options
        report["transcripts"] = transcripts
    return report
