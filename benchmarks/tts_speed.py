"""CPU speed of text-to-speech at the released student's shapes, ours next to Kyutai's ``pocket-tts``.

    .venv/bin/python benchmarks/tts_speed.py [--frames 125] [--threads 1 2] [--runs 3] [--rounds 2]
        [--precisions float32 int8] [--no-reference] [--json results.json]

Both implementations get random weights (speed does not depend on their values), the same ~10 s
voice prompt (espeak-ng when installed), the same text, EOS disabled and a fixed frame budget
(125 frames = 10 s of audio), batch 1. Each configuration runs in its own process (so peak memory
is its own), after one warm-up generation; configurations alternate over ``--rounds`` so a busy
machine slows both sides alike. Printed per configuration: real-time factor (wall / audio seconds)
and time to first audio through the public streaming API, the per-frame split (backbone, head,
decoder: a sequential single-stream replay) and peak RSS; then ours / reference ratios.
The reference is ``pocket-tts``'s own ``TTSModel``, built from its packaged ``english.yaml`` and
measured through its public ``generate_audio_stream``, timed by this script.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

TEXT = (
    "The old lighthouse keeper climbed the stairs every evening, lit the lamp, and watched the ships "
    "pass safely through the narrow channel until dawn."
)
SAMPLE_RATE = 24_000


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _voice_prompt(folder: Path, seconds: float = 10.0) -> torch.Tensor:
    """``[1, T]`` at 24 kHz: espeak-ng reading a paragraph, or a voiced synthetic signal without it."""
    from pockettts.audio import load_audio

    wav = folder / "prompt.wav"
    if shutil.which("espeak-ng"):
        words = "Speech synthesis turns written words into sound. " * 6
        subprocess.run(["espeak-ng", "-w", str(wav), words], check=True, capture_output=True)
        audio = load_audio(wav, sample_rate=SAMPLE_RATE)
    else:
        t = torch.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
        audio = (0.3 * torch.sin(2 * math.pi * 140 * t) * (1 + torch.sin(2 * math.pi * 4 * t)))[None]
    return audio[:, : int(seconds * SAMPLE_RATE)]


def _tokenizer(folder: Path) -> Path:
    from pockettts.text import train_tokenizer

    sentences = Path(__file__).resolve().parents[1] / "pockettts" / "data" / "demo_sentences.txt"
    manifest = folder / "text.jsonl"
    with manifest.open("w") as out:
        for index, line in enumerate(sentences.read_text().splitlines()):
            if line.strip():
                out.write(json.dumps({"id": str(index), "audio": "x.wav", "text": line.strip()}) + "\n")
    return train_tokenizer([manifest], folder / "tok", vocab_size=500)


def _timed_stream(chunks) -> tuple[float, float, int]:
    """(wall s, time to first chunk s, samples) of consuming a chunk iterator."""
    start = time.perf_counter()
    first, samples = None, 0
    for chunk in chunks:
        if first is None:
            first = time.perf_counter() - start
        samples += chunk.shape[-1]
    return time.perf_counter() - start, first, samples


def _median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


# -- ours -----------------------------------------------------------------------------------------
def run_ours(precision: str, frames: int, runs: int, folder: Path) -> dict:
    from omegaconf import OmegaConf

    from pockettts.models.flow_lm import FlowLM
    from pockettts.models.heads import sample_noise
    from pockettts.models.sampling import SamplingOptions
    from pockettts.models.tts import TextToSpeech
    from pockettts.models.vae import AudioVAE
    from pockettts.text import Tokenizer

    tokenizer = Tokenizer(_tokenizer(folder))
    torch.manual_seed(0)
    flow_lm = FlowLM(num_layers=6, vocab_size=tokenizer.vocab_size)  # the released student's shapes
    vae_config = OmegaConf.to_container(OmegaConf.load(Path(__file__).parents[1] / "configs/model/vae.yaml"))
    vae_config = {k: v for k, v in vae_config["vae"].items() if k != "_target_"} | {"weight_norm": False}
    tts = TextToSpeech(flow_lm, AudioVAE(**vae_config), tokenizer, precision=precision)
    voice = tts.voice(_voice_prompt(folder), SAMPLE_RATE)
    options = SamplingOptions(eos_threshold=math.inf, max_frames=frames, max_tokens=1000)
    _timed_stream(tts.stream(TEXT, voice, options))  # warm-up
    e2e = [_timed_stream(tts.stream(TEXT, voice, options)) for _ in range(runs)]

    backbone, head, decoder = [], [], []
    with torch.inference_mode():
        state = flow_lm.prefill_text(voice.backbone, torch.tensor(tokenizer.encode(TEXT)))
        decoder_state = tts.vae.init_state(1)
        previous = flow_lm.bos_emb[None]
        for _ in range(frames):
            start = time.perf_counter()
            z = flow_lm.step(previous, state)
            flow_lm.out_eos(z)
            after_backbone = time.perf_counter()
            noise = sample_noise((1, flow_lm.latent_dim), options.temperature)
            previous = flow_lm.head.sample(z, noise, 1)
            after_head = time.perf_counter()
            tts.vae.decode(flow_lm.denormalize(previous)[None], decoder_state)
            end = time.perf_counter()
            backbone.append(after_backbone - start)
            head.append(after_head - after_backbone)
            decoder.append(end - after_head)
    return _summary(e2e, backbone, head, decoder)


# -- the reference ---------------------------------------------------------------------------------
def run_reference(precision: str, frames: int, runs: int, folder: Path) -> dict:
    import logging

    import pocket_tts  # noqa: F401  (its import sets torch's intra-op threads to 1)
    from pocket_tts.models.flow_lm import lsd_decode
    from pocket_tts.models.tts_model import TTSModel
    from pocket_tts.modules.stateful_module import increment_steps, init_states
    from pocket_tts.utils.config import CONFIGS_DIR, load_config

    torch.set_num_threads(THREADS)  # after the package's own setting
    logging.getLogger("pocket_tts").setLevel(logging.ERROR)
    tokenizer_path = _tokenizer(folder)
    from pockettts.text import Tokenizer

    config = load_config(CONFIGS_DIR / "english.yaml")
    config.weights_path = config.weights_path_without_voice_cloning = None
    config.flow_lm.weights_path = config.mimi.weights_path = None
    config.flow_lm.lookup_table.n_bins = Tokenizer(tokenizer_path).vocab_size
    config.flow_lm.lookup_table.tokenizer = "sentencepiece"
    config.flow_lm.lookup_table.tokenizer_path = str(tokenizer_path)
    torch.manual_seed(0)
    model = TTSModel._from_pydantic_config_with_weights(config, 0.3, 1, None, math.inf)
    with torch.no_grad():
        model.flow_lm.speaker_proj_weight.normal_(0.0, 0.05)  # zeros until real weights load
    model.eval()
    if precision == "int8":
        from pocket_tts.quantization import RECOMMENDED_CONFIG, apply_dynamic_int8

        apply_dynamic_int8(model.flow_lm, RECOMMENDED_CONFIG)
    model._estimate_max_gen_len = lambda token_count: frames  # fixed frame budget
    voice_state = model.get_state_for_audio_prompt(_voice_prompt(folder))
    _timed_stream(model.generate_audio_stream(voice_state, TEXT, max_tokens=1000))  # warm-up
    e2e = [
        _timed_stream(model.generate_audio_stream(voice_state, TEXT, max_tokens=1000)) for _ in range(runs)
    ]

    flow_lm, mimi = model.flow_lm, model.mimi
    backbone, head, decoder = [], [], []
    with torch.inference_mode():
        state = init_states(flow_lm, batch_size=1, sequence_length=2000)
        model._run_flow_lm_and_increment_step(
            model_state=state, text_tokens=flow_lm.conditioner.prepare(TEXT)
        )
        steps_per_latent = int(mimi.encoder_frame_rate / mimi.frame_rate)
        mimi_state = init_states(mimi, batch_size=1, sequence_length=frames * steps_per_latent)
        empty_text = torch.empty(1, 0, flow_lm.dim)
        latent = torch.full((1, 1, flow_lm.ldim), float("nan"))
        for _ in range(frames):
            start = time.perf_counter()
            sequence = torch.where(torch.isnan(latent), flow_lm.bos_emb, latent)
            z = flow_lm.backbone(flow_lm.input_linear(sequence), empty_text, sequence, model_state=state)[
                :, -1
            ]
            flow_lm.out_eos(z)
            increment_steps(flow_lm, state, increment=1)
            after_backbone = time.perf_counter()
            noise = torch.empty(1, flow_lm.ldim).normal_(0.0, 0.3**0.5)
            latent = lsd_decode(partial(flow_lm.flow_net, z), noise, 1)[:, None]
            after_head = time.perf_counter()
            mimi.decode_from_latent(latent * flow_lm.emb_std + flow_lm.emb_mean, mimi_state)
            increment_steps(mimi, mimi_state, increment=steps_per_latent)
            end = time.perf_counter()
            backbone.append(after_backbone - start)
            head.append(after_head - after_backbone)
            decoder.append(end - after_head)
    return _summary(e2e, backbone, head, decoder)


def _summary(e2e, backbone, head, decoder) -> dict:
    audio_s = e2e[0][2] / SAMPLE_RATE
    return dict(
        rtf=statistics.median(wall / audio_s for wall, _, _ in e2e),
        ttfa_ms=statistics.median(first for _, first, _ in e2e) * 1000,
        audio_s=audio_s,
        backbone_ms=_median_ms(backbone),
        head_ms=_median_ms(head),
        decoder_ms=_median_ms(decoder),
        peak_rss_mb=_peak_rss_mb(),
        runs=[round(wall / audio_s, 4) for wall, _, _ in e2e],
    )


THREADS = 1


def worker(args: argparse.Namespace) -> None:
    global THREADS
    THREADS = args.worker_threads
    torch.set_num_threads(THREADS)
    with tempfile.TemporaryDirectory() as folder:
        run = run_reference if args.worker == "reference" else run_ours
        result = run(args.worker_precision, args.frames, args.runs, Path(folder))
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, default=125)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--precisions", nargs="+", default=["float32", "int8"])
    parser.add_argument("--runs", type=int, default=3, help="timed generations per process")
    parser.add_argument("--rounds", type=int, default=1, help="processes per configuration, alternated")
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--worker", choices=["ours", "reference"], help=argparse.SUPPRESS)
    parser.add_argument("--worker-precision", help=argparse.SUPPRESS)
    parser.add_argument("--worker-threads", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    has_reference = not args.no_reference and _importable("pocket_tts")
    sides = ["reference", "ours"] if has_reference else ["ours"]
    results: dict[tuple, list[dict]] = {}
    for _ in range(args.rounds):
        for threads in args.threads:
            for precision in args.precisions:
                for side in sides:
                    command = [sys.executable, __file__, "--worker", side, "--worker-precision", precision,
                               "--worker-threads", str(threads), "--frames", str(args.frames),
                               "--runs", str(args.runs)]  # fmt: skip
                    done = subprocess.run(command, check=True, capture_output=True, text=True)
                    result = json.loads(done.stdout.strip().splitlines()[-1])
                    results.setdefault((side, precision, threads), []).append(result)
                    print(
                        f"  {side:9s} {precision:7s} {threads} thr: RTF {result['rtf']:.3f}", file=sys.stderr
                    )
    merged = {key: _merge(runs) for key, runs in results.items()}
    print(
        f"{args.frames} frames ({args.frames / 12.5:.1f} s of audio), batch 1, medians;"
        f" torch {torch.__version__}"
    )
    header = ("impl", "precision", "thr", "RTF", "TTFA ms", "backbone ms", "head ms", "decoder ms", "peak MB")
    print("  ".join(f"{h:>11}" for h in header))
    for (side, precision, threads), r in merged.items():
        row = (side, precision, threads, f"{r['rtf']:.3f}", f"{r['ttfa_ms']:.0f}", f"{r['backbone_ms']:.1f}",
               f"{r['head_ms']:.1f}", f"{r['decoder_ms']:.1f}", f"{r['peak_rss_mb']:.0f}")  # fmt: skip
        print("  ".join(f"{c:>11}" for c in row))
    if has_reference:
        print("ours / reference (same precision and threads; < 1 is faster or smaller):")
        for (side, precision, threads), r in merged.items():
            ref = merged.get(("reference", precision, threads))
            if side == "ours" and ref:
                memory = r["peak_rss_mb"] / ref["peak_rss_mb"]
                print(f"  {precision:7s} {threads} thr: RTF {r['rtf'] / ref['rtf']:.2f}  "
                      f"TTFA {r['ttfa_ms'] / ref['ttfa_ms']:.2f}  peak memory {memory:.2f}")  # fmt: skip
        for threads in args.threads:
            ours, ref = merged.get(("ours", "int8", threads)), merged.get(("reference", "float32", threads))
            if ours and ref:
                rtf, ttfa = ours["rtf"] / ref["rtf"], ours["ttfa_ms"] / ref["ttfa_ms"]
                print(f"  ours int8 / reference float32 (package default), {threads} thr: "
                      f"RTF {rtf:.2f}  TTFA {ttfa:.2f}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"/".join(map(str, k)): v for k, v in merged.items()}, indent=2))


def _merge(runs: list[dict]) -> dict:
    keys = ("rtf", "ttfa_ms", "backbone_ms", "head_ms", "decoder_ms")
    merged = {k: statistics.median(r[k] for r in runs) for k in keys}
    return merged | {"peak_rss_mb": max(r["peak_rss_mb"] for r in runs), "processes": len(runs)}


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


if __name__ == "__main__":
    main()
