r"""How faithful the int8 inference path is to float32.

    .venv/bin/python benchmarks/int8_fidelity.py [--frames 100]
    .venv/bin/python benchmarks/int8_fidelity.py --checkpoint logs/tiny/student/export/student.safetensors \
        --voice data/demo/clean/...wav --whisper checkpoints/whisper/tiny.en.pt [--texts FILE]
    .venv/bin/python benchmarks/int8_fidelity.py --checkpoint logs/demo/overfit8/export/teacher.safetensors \
        --prompts data/demo/clean/overfit8.jsonl --whisper checkpoints/whisper/base.pt

1. Released student shapes, random weights: the float32 model generates ``--frames`` latents; the
   int8 model then reads the same previous latents and noise (teacher forcing, so that the
   autoregressive loop's sensitivity does not hide the per-step error) and the relative RMS error
   of its latents and of the decoder's audio from the same latents (as an SNR) are printed.
2. With a trained ``--checkpoint``: both precisions speak each text with the same seeds (``--seeds
   N``: 0 … N-1); Whisper transcribes both and the word error rate of the int8 transcripts against
   the float32 ones (0 = Whisper hears the same words) and of each against the texts are printed
   with the transcripts, beside the WER between float32 transcripts of different seeds (what
   resampling alone changes), generation lengths and EOS per precision. ``--prompts MANIFEST``
   instead takes, per item with sentence segments, its first sentence as the voice and its second
   as the text (the cut the overfit check trains on).
"""

from __future__ import annotations

import argparse
import copy
import statistics
from itertools import combinations
from pathlib import Path

import torch

from pockettts.audio import read_audio
from pockettts.models.flow_lm import FlowLM
from pockettts.models.heads import sample_noise
from pockettts.models.quantize import set_precision
from pockettts.models.sampling import SamplingOptions

TEXTS = [
    "The boat drifted slowly toward the shore.",
    "Please remember to water the plants on Sunday.",
    "A cold wind blew across the empty field.",
]


def random_model_errors(frames: int) -> None:
    from omegaconf import OmegaConf

    from pockettts.models.vae import AudioVAE

    torch.manual_seed(0)
    flow_lm = FlowLM(num_layers=6).eval()
    with torch.no_grad():  # the zero-initialised head output would make every latent equal
        for name, param in flow_lm.head.named_parameters():
            if "weight" in name:
                param.normal_(0.0, 0.05)
    vae_config = OmegaConf.to_container(OmegaConf.load(Path(__file__).parents[1] / "configs/model/vae.yaml"))
    vae = AudioVAE(**{k: v for k, v in vae_config["vae"].items() if k != "_target_"} | {"weight_norm": False})
    quantized_lm, quantized_vae = copy.deepcopy(flow_lm), copy.deepcopy(vae).eval()
    set_precision(quantized_lm, quantized_vae, "int8")
    voice, tokens = torch.randn(60, 32), torch.randint(0, 4000, (30,))
    generator = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        exact_state, int8_state = flow_lm.prefill(voice, tokens), quantized_lm.prefill(voice, tokens)
        previous = flow_lm.bos_emb[None]
        exact, approx = [], []
        for _ in range(frames):
            noise = sample_noise((1, 32), SamplingOptions().temperature, generator=generator)
            latent = flow_lm.head.sample(flow_lm.step(previous, exact_state), noise, 1)
            approx.append(quantized_lm.head.sample(quantized_lm.step(previous, int8_state), noise, 1))
            exact.append(latent)
            previous = latent
        exact, approx = torch.cat(exact), torch.cat(approx)
        relative = ((approx - exact).pow(2).mean() / exact.pow(2).mean()).sqrt()
        raw = flow_lm.denormalize(exact)[None]
        audio, audio_int8 = vae.decode(raw), quantized_vae.decode(raw)
        snr = 10 * torch.log10(audio.pow(2).sum() / (audio - audio_int8).pow(2).sum())
    print(f"released shapes, random weights, {frames} teacher-forced frames:")
    print(f"  int8 latent error: relative RMS {relative:.4f} (per-dimension latent std {exact.std():.3f})")
    print(f"  int8 decoder on the same latents: SNR {snr:.1f} dB against float32")


def transcript_agreement(
    checkpoint: Path, prompts: list[tuple[tuple[torch.Tensor, int], str]], whisper: Path, seeds: int
) -> None:
    """Both precisions speak each ((voice ``[C, T]``, rate), text) with sampling seeds 0 … seeds-1;
    prints the transcripts, then the mean WERs over all items and seeds."""
    from pockettts.eval.wer import word_error_rate
    from pockettts.models.tts import TextToSpeech
    from pockettts.whisper import WhisperASR

    voices = [voice for voice, _ in prompts]
    jobs = [(index, seed) for index in range(len(prompts)) for seed in range(seeds)]
    speech, generations = {}, {}
    for precision in ("float32", "int8"):
        tts = TextToSpeech.load(checkpoint, precision=precision)
        states = [tts.voice(audio, rate) for audio, rate in voices]
        generations[precision] = [
            tts.generate(prompts[i][1], states[i], SamplingOptions(seed=seed)) for i, seed in jobs
        ]
        speech[precision] = [generation.audio for generation in generations[precision]]
    asr = WhisperASR(whisper)
    heard = {p: asr.transcribe_many(clips, 24_000, progress=False) for p, clips in speech.items()}
    texts = [prompts[i][1] for i, _ in jobs]
    for (_, seed), text, exact, approx in zip(jobs, texts, heard["float32"], heard["int8"]):
        print(f"  {text!r} (seed {seed})\n    float32: {exact!r}\n    int8:    {approx!r}")
    per_job = [word_error_rate([a], [b])["wer"] for a, b in zip(heard["float32"], heard["int8"]) if a.strip()]
    same = sum(a == b for a, b in zip(heard["float32"], heard["int8"]))
    print(f"  {len(jobs)} generations ({len(prompts)} texts x {seeds} seeds); identical transcripts: {same}")
    lengths = [len(a.latents) == len(b.latents) for a, b in zip(generations["float32"], generations["int8"])]
    ended = {p: sum(g.eos_reached for g in found) for p, found in generations.items()}
    print(
        f"  same length as float32: {sum(lengths)}; EOS reached: {ended['float32']} (float32),"
        f" {ended['int8']} (int8)"
    )
    if per_job:
        mean, median = sum(per_job) / len(per_job), statistics.median(per_job)
        print(f"  WER of int8 transcripts against float32 ones: mean {mean:.1%}, median {median:.1%}")
    # What resampling alone changes: float32 transcripts of one text under two different seeds.
    by_text = [
        [h for (i, _), h in zip(jobs, heard["float32"]) if i == index] for index in range(len(prompts))
    ]
    resampled = [
        word_error_rate([a], [b])["wer"]
        for heard_text in by_text
        for a, b in combinations(heard_text, 2)
        if a.strip()
    ]
    if resampled:
        print(
            f"  WER between float32 transcripts of different seeds (resampling alone): median"
            f" {statistics.median(resampled):.1%}, mean {sum(resampled) / len(resampled):.1%}"
        )
    for precision, transcripts in heard.items():
        wers = [word_error_rate([t], [h])["wer"] for t, h in zip(texts, transcripts)]
        print(
            f"  WER of {precision} speech against the texts: {word_error_rate(texts, transcripts)['wer']:.1%}"
            f" (corpus); per generation: mean {sum(wers) / len(wers):.1%},"
            f" median {statistics.median(wers):.1%}"
        )


def sentence_prompts(manifest: Path) -> list[tuple[tuple[torch.Tensor, int], str]]:
    """((voice, rate), text) per manifest item with 2+ segments: the audio to 0.1 s after its first
    sentence and its second sentence."""
    from pockettts.data.manifest import read_manifest

    prompts = []
    for item in read_manifest(manifest):
        if len(item.segments) < 2:
            continue
        # Segment times are item-relative.
        voice = read_audio(item.resolve_audio(manifest.parent), item.offset, item.segments[0].end + 0.1)
        prompts.append((voice, item.segments[1].text))
    return prompts


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--checkpoint", type=Path, default=None, help="an exported FlowLM that speaks")
    parser.add_argument("--voice", type=Path, default=None)
    parser.add_argument("--whisper", type=Path, default=None)
    parser.add_argument("--texts", type=Path, default=None, help="one text per line")
    parser.add_argument(
        "--prompts", type=Path, default=None, help="manifest: voice = 1st sentence, text = 2nd"
    )
    parser.add_argument("--seeds", type=int, default=1, help="sampling seeds per text (0 … N-1)")
    args = parser.parse_args()
    random_model_errors(args.frames)
    if args.checkpoint and args.prompts:
        if not args.whisper:
            parser.error("--checkpoint needs --whisper")
        transcript_agreement(args.checkpoint, sentence_prompts(args.prompts), args.whisper, args.seeds)
    elif args.checkpoint:
        if not (args.voice and args.whisper):
            parser.error("--checkpoint needs --voice and --whisper")
        texts = args.texts.read_text().splitlines() if args.texts else TEXTS
        voice = read_audio(args.voice)
        prompts = [(voice, text) for text in texts if text.strip()]
        transcript_agreement(args.checkpoint, prompts, args.whisper, args.seeds)


if __name__ == "__main__":
    main()
