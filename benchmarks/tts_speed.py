"""CPU speed of text-to-speech, ours next to Kyutai's ``pocket-tts``, at the shapes of its packaged configs.

    .venv/bin/python benchmarks/tts_speed.py [--configs english_2026-10 english_18m_2026-10 ...]
        [--frames 125] [--threads 1 2] [--runs 3] [--rounds 1] [--precisions float32 int8]
        [--prompt-seconds 10] [--no-reference] [--json results.json]
    .venv/bin/python benchmarks/tts_speed.py --checkpoints EXPORT.safetensors ... [--vae VAE.safetensors]

Each ``--configs`` entry names a ``pocket-tts`` config (``english_2026-10``, the 100M model, is the
default; ``english_18m_2026-10``, ``english_7m_2026-10`` and ``english_2m_2026-10`` are the small
ones). ``pocket-tts`` builds that model with random weights (speed does not depend on their values)
and saves it once per config; its own ``TTSModel`` loads the file, and ours reads the same file
through ``pockettts.compat.pocket.load_pocket_tts``. Both get the same voice prompt (espeak-ng when
installed), the same text and tokenizer, EOS disabled and a fixed frame budget (125 frames = 10 s of
audio), batch 1. Each configuration runs in its own process (so peak memory is its own), after one
warm-up generation; configurations alternate (configs, threads, precisions, then the two sides) over
``--rounds`` so a busy machine slows both sides alike. ``--checkpoints`` measures exported models
of ours (a trained student, say) the same way, alone: with the codec each records, or
``--vae``. Printed per configuration: real-time factor
(wall / audio seconds) and time to first audio through the public streaming API, the per-frame
split (backbone, head, decoder: a sequential single-stream replay, in a worker thread) and peak RSS;
then ours / reference ratios. The reference is measured through its public ``generate_audio_stream``,
timed by this script; ``int8`` there is its ``quantize=True``.
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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import TypeVar

import torch

TEXT = (
    "The old lighthouse keeper climbed the stairs every evening, lit the lamp, and watched the ships "
    "pass safely through the narrow channel until dawn."
)
SAMPLE_RATE = 24_000
DEFAULT_CONFIG = "english_2026-10"
T = TypeVar("T")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _write_voice_prompt(path: Path, seconds: float) -> None:
    """A ``seconds`` long 24 kHz prompt at ``path``: espeak-ng reading a paragraph, or a voiced
    synthetic signal without it."""
    from pockettts.audio import load_audio, save_audio

    if shutil.which("espeak-ng"):
        words = "Speech synthesis turns written words into sound. " * 6
        subprocess.run(["espeak-ng", "-w", str(path), words], check=True, capture_output=True)
        audio = load_audio(path, sample_rate=SAMPLE_RATE)
    else:
        t = torch.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
        audio = (0.3 * torch.sin(2 * math.pi * 140 * t) * (1 + torch.sin(2 * math.pi * 4 * t)))[None]
    save_audio(path, audio[:, : int(seconds * SAMPLE_RATE)], SAMPLE_RATE)


def _voice_prompt(folder: Path) -> torch.Tensor:
    """``[1, T]`` at 24 kHz: the prompt ``prepare`` wrote."""
    from pockettts.audio import load_audio

    return load_audio(folder / "prompt.wav", sample_rate=SAMPLE_RATE)


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


# -- the shared model file ---------------------------------------------------------------------------
def prepare_checkpoint(checkpoint: Path, vae: Path | None, folder: Path, prompt_seconds: float) -> None:
    """Write into ``folder`` what ``run_ours`` reads for an exported model: ``checkpoint.json``
    (its path and the codec to decode with) and ``prompt.wav``."""
    (folder / "checkpoint.json").write_text(
        json.dumps({"checkpoint": str(checkpoint.resolve()), "vae": str(vae.resolve()) if vae else None})
    )
    _write_voice_prompt(folder / "prompt.wav", prompt_seconds)


def prepare(config_name: str, folder: Path, prompt_seconds: float) -> None:
    """Write into ``folder`` what both sides read: ``config.yaml`` (the packaged config without
    download paths, with this script's tokenizer), ``model.safetensors`` (``pocket-tts``'s model
    with random weights, seed 0), the tokenizer and ``prompt.wav``."""
    import yaml
    from pocket_tts.models.tts_model import TTSModel
    from pocket_tts.utils.config import CONFIGS_DIR, Config
    from safetensors.torch import save_file

    from pockettts.text import Tokenizer

    tokenizer_path = _tokenizer(folder)
    raw = yaml.safe_load((CONFIGS_DIR / f"{config_name}.yaml").read_text())
    raw["weights_path"] = raw["weights_path_without_voice_cloning"] = None
    vocab_size = Tokenizer(tokenizer_path).vocab_size
    raw["flow_lm"]["lookup_table"].update(
        n_bins=vocab_size, tokenizer="sentencepiece", tokenizer_path=str(tokenizer_path)
    )
    (folder / "config.yaml").write_text(yaml.safe_dump(raw))
    torch.manual_seed(0)
    model = TTSModel._from_pydantic_config_with_weights(Config(**raw), 0.3, 1, None, math.inf)
    with torch.no_grad():
        model.flow_lm.speaker_proj_weight.normal_(0.0, 0.05)  # zeros until real weights load
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    _write_voice_prompt(folder / "prompt.wav", prompt_seconds)


# -- ours -----------------------------------------------------------------------------------------
def run_ours(precision: str, frames: int, runs: int, folder: Path) -> dict:
    from pockettts.compat.pocket import load_pocket_tts, read_pocket_config
    from pockettts.models.heads import sample_noise
    from pockettts.models.sampling import SamplingOptions
    from pockettts.models.tts import TextToSpeech
    from pockettts.text import Tokenizer

    if (folder / "checkpoint.json").exists():
        paths = json.loads((folder / "checkpoint.json").read_text())
        tts = TextToSpeech.load(paths["checkpoint"], vae=paths["vae"], precision=precision)
    else:
        config = read_pocket_config(folder / "config.yaml")
        flow_lm, vae = load_pocket_tts(folder / "model.safetensors", config)
        tokenizer = Tokenizer(config["flow_lm"]["lookup_table"]["tokenizer_path"])
        tts = TextToSpeech(flow_lm, vae, tokenizer, precision=precision)
    flow_lm, tokenizer = tts.flow_lm, tts.tokenizer
    voice = tts.voice(_voice_prompt(folder), SAMPLE_RATE)
    options = SamplingOptions(eos_threshold=math.inf, max_frames=frames, max_tokens=1000)
    _timed_stream(tts.stream(TEXT, voice, options))  # warm-up
    e2e = [_timed_stream(tts.stream(TEXT, voice, options)) for _ in range(runs)]

    @torch.inference_mode()
    def replay() -> tuple[list[float], list[float], list[float]]:
        backbone, head, decoder = [], [], []
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
        return backbone, head, decoder

    return _summary(e2e, *_in_thread(replay))


# -- the reference ---------------------------------------------------------------------------------
def run_reference(precision: str, frames: int, runs: int, folder: Path) -> dict:
    import logging

    import pocket_tts  # noqa: F401  (its import sets torch's intra-op threads to 1)
    from pocket_tts.models import flow_lm as pocket_flow_lm
    from pocket_tts.models.tts_model import TTSModel
    from pocket_tts.modules.stateful_module import increment_steps, init_states
    from pocket_tts.utils.config import load_config
    from safetensors.torch import load_file

    torch.set_num_threads(THREADS)  # after the package's own setting
    logging.getLogger("pocket_tts").setLevel(logging.ERROR)
    model = TTSModel._from_pydantic_config_with_weights(
        load_config(folder / "config.yaml"), 0.3, 1, None, math.inf
    )
    model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=True)
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
    decode = getattr(pocket_flow_lm, f"{flow_lm.flow_type}_decode")  # lsd_decode, drifting_decode, ...

    @torch.inference_mode()
    def replay() -> tuple[list[float], list[float], list[float]]:
        backbone, head, decoder = [], [], []
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
            latent = decode(partial(flow_lm.flow_net, z), noise, 1)[:, None]
            after_head = time.perf_counter()
            mimi.decode_from_latent(latent * flow_lm.emb_std + flow_lm.emb_mean, mimi_state)
            increment_steps(mimi, mimi_state, increment=steps_per_latent)
            end = time.perf_counter()
            backbone.append(after_backbone - start)
            head.append(after_head - after_backbone)
            decoder.append(end - after_head)
        return backbone, head, decoder

    return _summary(e2e, *_in_thread(replay))


def _in_thread(work: Callable[[], T]) -> T:
    """``work()`` in a fresh thread, where both pipelines run their generation: on a busy machine the
    main thread's team of OpenMP threads spin-waits far longer than another thread's (several
    times slower with 2 intra-op threads)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(work).result()


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
    THREADS = args.worker_threads or 1
    torch.set_num_threads(THREADS)
    if args.worker == "prepare" and args.worker_checkpoint:
        return prepare_checkpoint(args.worker_checkpoint, args.vae, args.worker_folder, args.prompt_seconds)
    if args.worker == "prepare":
        return prepare(args.worker_config, args.worker_folder, args.prompt_seconds)
    run = run_reference if args.worker == "reference" else run_ours
    print(json.dumps(run(args.worker_precision, args.frames, args.runs, args.worker_folder)))


def _run_worker(*options: str) -> str:
    done = subprocess.run([sys.executable, __file__, *options], capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"benchmark worker {' '.join(options)} failed:\n{done.stderr[-4000:]}")
    return done.stdout


def main(argv: list[str] | None = None) -> dict[str, dict]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--configs", nargs="+", help=f"pocket-tts config names (default {DEFAULT_CONFIG})")
    parser.add_argument("--checkpoints", nargs="+", type=Path, default=[], help="exported models of ours")
    parser.add_argument("--vae", type=Path, help="the codec for --checkpoints (default: the recorded one)")
    parser.add_argument("--frames", type=int, default=125)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--precisions", nargs="+", default=["float32", "int8"])
    parser.add_argument("--runs", type=int, default=3, help="timed generations per process")
    parser.add_argument("--rounds", type=int, default=1, help="processes per configuration, alternated")
    parser.add_argument("--prompt-seconds", type=float, default=10.0)
    parser.add_argument("--no-reference", action="store_true", help="measure ours alone")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--worker", choices=["prepare", "ours", "reference"], help=argparse.SUPPRESS)
    parser.add_argument("--worker-config", help=argparse.SUPPRESS)
    parser.add_argument("--worker-checkpoint", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--worker-folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--worker-precision", help=argparse.SUPPRESS)
    parser.add_argument("--worker-threads", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    if args.configs is None:
        args.configs = [] if args.checkpoints else [DEFAULT_CONFIG]
    if args.configs and not _importable("pocket_tts"):
        sys.exit("tts_speed.py builds its models with Kyutai's pocket-tts: install the `dev` extra")
    for checkpoint in [*args.checkpoints, *([args.vae] if args.vae else [])]:
        if not checkpoint.is_file():
            sys.exit(f"tts_speed.py: no such file: {checkpoint}")
    sources = {name: ("--worker-config", name) for name in args.configs}
    sources |= {str(path): ("--worker-checkpoint", str(path)) for path in args.checkpoints}
    args.configs = list(sources)  # the names of the printed tables
    results: dict[tuple, list[dict]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        folders = {name: Path(scratch) / f"model{index}" for index, name in enumerate(sources)}
        for name, folder in folders.items():
            folder.mkdir()
            _run_worker("--worker", "prepare", *sources[name], "--worker-folder", str(folder),
                        "--prompt-seconds", str(args.prompt_seconds),
                        *(["--vae", str(args.vae)] if args.vae else []))  # fmt: skip
        for _ in range(args.rounds):
            for name in args.configs:
                ours_alone = args.no_reference or sources[name][0] == "--worker-checkpoint"
                for threads in args.threads:
                    for precision in args.precisions:
                        for side in ["ours"] if ours_alone else ["reference", "ours"]:
                            output = _run_worker(
                                "--worker", side, "--worker-folder", str(folders[name]),
                                "--worker-precision", precision, "--worker-threads", str(threads),
                                "--frames", str(args.frames), "--runs", str(args.runs),
                            )  # fmt: skip
                            result = json.loads(output.strip().splitlines()[-1])
                            results.setdefault((name, side, precision, threads), []).append(result)
                            print(f"  {name} {side:9s} {precision:7s} {threads} thr: RTF {result['rtf']:.3f}",
                                  file=sys.stderr)  # fmt: skip
    merged = {key: _merge(runs) for key, runs in results.items()}
    _print_tables(merged, args)
    table = {"/".join(map(str, key)): value for key, value in merged.items()}
    if args.json:
        args.json.write_text(json.dumps(table, indent=2))
    return table


HEADER = ("impl", "precision", "thr", "RTF", "TTFA ms", "backbone ms", "head ms", "decoder ms", "peak MB")


def _print_tables(merged: dict[tuple, dict], args: argparse.Namespace) -> None:
    print(
        f"{args.frames} frames ({args.frames / 12.5:.1f} s of audio), batch 1, medians;"
        f" torch {torch.__version__}"
    )
    for name in args.configs:
        print(f"\n{name}")
        print("  ".join(f"{h:>11}" for h in HEADER))
        rows = {key[1:]: r for key, r in merged.items() if key[0] == name}
        for (side, precision, threads), r in rows.items():
            row = (side, precision, threads, f"{r['rtf']:.3f}", f"{r['ttfa_ms']:.0f}",
                   f"{r['backbone_ms']:.1f}", f"{r['head_ms']:.1f}", f"{r['decoder_ms']:.1f}",
                   f"{r['peak_rss_mb']:.0f}")  # fmt: skip
            print("  ".join(f"{c:>11}" for c in row))
        if not any(side == "reference" for side, _, _ in rows):
            continue
        print("ours / reference (< 1 is faster or smaller):")
        for (side, precision, threads), r in rows.items():
            ref = rows.get(("reference", precision, threads))
            if side == "ours" and ref:
                print(f"  {precision:7s} {threads} thr: {_ratios(r, ref)}")
        for threads in args.threads:
            ours, ref = rows.get(("ours", "int8", threads)), rows.get(("reference", "float32", threads))
            if ours and ref:
                print(f"  ours int8 / its default float32, {threads} thr: {_ratios(ours, ref)}")


def _ratios(ours: dict, ref: dict) -> str:
    return (f"RTF {ours['rtf'] / ref['rtf']:.2f}  TTFA {ours['ttfa_ms'] / ref['ttfa_ms']:.2f}  "
            f"peak memory {ours['peak_rss_mb'] / ref['peak_rss_mb']:.2f}")  # fmt: skip


def _merge(runs: list[dict]) -> dict:
    keys = ("rtf", "ttfa_ms", "backbone_ms", "head_ms", "decoder_ms")
    merged = {k: statistics.median(r[k] for r in runs) for k in keys}
    return merged | {"peak_rss_mb": max(r["peak_rss_mb"] for r in runs), "processes": len(runs)}


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


if __name__ == "__main__":
    main()
