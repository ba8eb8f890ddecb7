"""Does a trained backbone speak its prompts' texts as well as the codec can? For each item of a
manifest, the validation cut gives a voice prompt, a text and the real target latents; the
backbone generates from the prompt and text, both the generation and the VAE's decoding of the real
latents are transcribed by Whisper, and both WERs are reported (the codec's own is the ceiling),
with the distance between generated and real latents (normalised MSE) and between the two audios
(mel distance over the shorter length).

``--teacher-forced`` predicts each frame from the *real* frames before it instead (one step ahead,
the voice and text read as in generation, same noise and CFG): generation's own errors cannot pile
up, so the pair of reports tells a backbone that cannot say a frame from one that loses its way.
Command line: ``pockettts-tools resynthesis``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from tqdm import tqdm

from pockettts.audio import save_audio
from pockettts.eval.validation_cuts import cut_indices, validation_examples
from pockettts.eval.wer import word_error_rate
from pockettts.losses.spectral import mel_distance
from pockettts.models.flow_lm import FlowLM
from pockettts.models.heads import sample_noise
from pockettts.models.sampling import SamplingOptions
from pockettts.models.vae import load_vae
from pockettts.whisper import WhisperASR


@torch.no_grad()
def teacher_forced_latents(
    model: FlowLM,
    voice: torch.Tensor,
    tokens: torch.Tensor,
    target: torch.Tensor,
    options: SamplingOptions,
) -> torch.Tensor:
    """Frame ``j`` of ``target`` ``[F, D]`` (raw latents) sampled from the model given the real frames
    ``< j``, the voice ``[Fv, voice_dim]`` and ``tokens`` ``[L]``: raw latents ``[F, D]``. With CFG
    the null row drops voice and text, as ``FlowLM.generate``'s does; the noise is seeded with
    ``options.seed`` (the frame limits of ``options`` do not apply: every frame is predicted)."""
    rows = 2 if options.guided else 1
    lengths = [
        torch.full((rows,), n, dtype=torch.long, device=target.device)
        for n in (voice.shape[0], tokens.shape[0], target.shape[0])
    ]
    dropped = torch.tensor([False, True][:rows], device=target.device)
    out = model(
        voice[None].expand(rows, -1, -1), lengths[0], tokens[None].expand(rows, -1), lengths[1],
        target[None].expand(rows, -1, -1), lengths[2], drop_voice=dropped, drop_text=dropped,
    )  # fmt: skip
    z = out["z"][:, :-1]  # [rows, F, d_model]: position j predicts frame j
    z = z[1] + options.cfg_scale * (z[0] - z[1]) if options.guided else z[0]
    generator = torch.Generator(z.device).manual_seed(options.seed)
    noise = sample_noise(
        (target.shape[0], model.latent_dim), options.temperature, options.noise_clamp, generator, z.device
    )
    return model.denormalize(model.head.sample(z, noise, options.head_steps))


@torch.no_grad()
def resynthesis_report(
    teacher: str | Path,
    manifest: str | Path,
    cache_dir: str | Path,
    whisper: str | Path,
    out: str | Path,
    vae: str | Path | None = None,
    sampling: SamplingOptions | None = None,
    max_seconds: float = 15.0,
    limit: int | None = None,
    spread_items: bool = False,
    teacher_forced: bool = False,
    loop_guard: bool = False,
) -> dict:
    """Generate (or with ``teacher_forced`` predict one step ahead of the real frames), decode,
    transcribe; write wavs, ``items.jsonl`` and ``summary.json`` under ``out``. ``limit`` items: the
    first ones, or with ``spread_items`` spread evenly over the manifest (a speaker-sorted manifest
    then gives every speaker, not only the first). Item ``i`` is sampled with ``sampling`` (default
    ``SamplingOptions()``) at seed ``sampling.seed + i``, for at most ``max_seconds``."""
    sampling = sampling or SamplingOptions()
    model, dataset, vae_path = validation_examples(teacher, manifest, cache_dir, vae)
    codec = load_vae(vae_path)
    asr = WhisperASR(whisper, loop_guard=loop_guard)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows, pairs = [], []
    indices = cut_indices(len(dataset), limit, spread_items)
    for index in tqdm(indices, desc="resynthesis"):
        example = dataset[index]
        options = dataclasses.replace(
            sampling, seed=sampling.seed + index, max_frames=int(max_seconds * codec.frame_rate)
        )
        if teacher_forced:
            latents = teacher_forced_latents(
                model, example["voice"], example["tokens"], example["target"], options
            )
        else:
            latents = model.generate(example["voice"], example["tokens"], options)
        generated = codec.decode(latents[None])[0, 0]
        reference = codec.decode(example["target"][None])[0, 0]
        save_audio(out / f"{example['id']}_generated.wav", generated[None], codec.sample_rate)
        save_audio(out / f"{example['id']}_codec.wav", reference[None], codec.sample_rate)
        pairs.append((model.normalize(latents), model.normalize(example["target"])))
        frames = min(latents.shape[0], example["target"].shape[0])
        distance = (
            (model.normalize(latents[:frames]) - model.normalize(example["target"][:frames])).pow(2).mean()
        )
        samples = frames * codec.frame_size
        audio_distance = mel_distance(
            generated[None, None, :samples], reference[None, None, :samples], codec.sample_rate
        )
        rows.append({
            "id": example["id"], "text": example["text"],
            "generated_transcript": asr.transcribe(generated, codec.sample_rate),
            "codec_transcript": asr.transcribe(reference, codec.sample_rate),
            "generated_frames": latents.shape[0], "target_frames": example["target"].shape[0],
            "latent_mse": float(distance),
            "mel_distance_to_codec": float(audio_distance),
        })  # fmt: skip
    texts = [r["text"] for r in rows]
    # Baseline for latent_mse: each generation against the *next* item's real latents.
    shuffled = [_mse(generated, pairs[(i + 1) % len(pairs)][1]) for i, (generated, _) in enumerate(pairs)]
    generated_wer = word_error_rate(texts, [r["generated_transcript"] for r in rows])
    codec_wer = word_error_rate(texts, [r["codec_transcript"] for r in rows])
    summary = {
        "teacher": str(teacher), "vae": str(vae_path), "whisper": asr.options, "items": len(rows),
        "selection": "spread" if spread_items else "first",
        "mode": "teacher_forced" if teacher_forced else "generated",
        "cfg_scale": sampling.cfg_scale, "temperature": sampling.temperature, "seed": sampling.seed,
        "generated_wer": generated_wer["wer"], "codec_wer": codec_wer["wer"],
        "latent_mse": sum(r["latent_mse"] for r in rows) / len(rows),
        "mel_distance_to_codec": sum(r["mel_distance_to_codec"] for r in rows) / len(rows),
        "latent_mse_other_item": sum(shuffled) / len(shuffled),
        "length_ratio": sum(r["generated_frames"] for r in rows) / sum(r["target_frames"] for r in rows),
    }  # fmt: skip
    (out / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _mse(a: torch.Tensor, b: torch.Tensor) -> float:
    frames = min(a.shape[0], b.shape[0])
    return float((a[:frames] - b[:frames]).pow(2).mean())
