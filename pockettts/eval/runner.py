"""The evaluation run: speak every item of a test set, transcribe it, score it, write it down.

For each item: a voice state from its prompt audio, generation (seeded by the item's position, so
a resumed run speaks exactly what an uninterrupted one would; one at a time, or ``generate_batch``
over ``generation_batch_size`` items), the wav kept under ``<results>/wavs/<id>.wav``, wall time,
real-time factor and time to first audio (the streaming path's first 80 ms chunk, timed on its
own). Every ``asr_batch_size`` items the batch is transcribed by Whisper and
scored (WER and CER under each normaliser, speaker similarity to the prompt and to the reference
recording when there is one, a quality score, silent output, EOS reached) and appended to
``items.jsonl``, so a crash loses at most one batch and a rerun skips what is written.
``results.json`` and ``results.md`` are rebuilt from ``items.jsonl`` at the end, each metric with
its 95% bootstrap interval over items (``pockettts.eval.intervals``), and the listening page
``report.html`` (``pockettts.eval.html_page``), for which each item's prompt, cut as the voice was
made from it, and reference recording are kept under ``prompts/`` and ``references/``.

Everything runs on ``cfg.device``. On a GPU, unless told otherwise, items are generated
``asr_batch_size`` at a time (``generate_batch``) and Whisper decodes each batch at once; on a CPU
they are generated and transcribed one by one, the exact path.

The directory, ``<results_root>/<testset>/<knobs>/``, is named from every knob (``results_name``),
and ``settings.json`` inside it holds them all: a rerun with other settings is refused rather than
mixed into the same numbers. ``cfg`` is an ``EvalConfig`` (``pockettts.schema``); item ``i`` is
sampled with ``cfg.sampling`` at seed ``cfg.sampling.seed + i``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import platform
import re
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from pockettts.audio import AudioError, end_on_pause, is_silent, save_audio
from pockettts.devices import describe_device, resolve_device, synchronize
from pockettts.eval.html_page import write_run_page
from pockettts.eval.intervals import BOOTSTRAP, summary_intervals
from pockettts.eval.quality import build_quality_scorer
from pockettts.eval.report import markdown_table
from pockettts.eval.speaker import build_speaker_embedder, cosine_similarity
from pockettts.eval.testsets import (
    EvalItem,
    TestSetError,
    load_prompt_audio,
    load_reference_audio,
    load_testset,
)
from pockettts.eval.wer import character_error_rate, utterance_scores, word_error_rate
from pockettts.io import atomic_write_text
from pockettts.models.bundle import ExportedModel, read_export
from pockettts.models.sampling import SamplingOptions
from pockettts.models.tts import Generation, TextToSpeech, VoiceState
from pockettts.schema import EvalConfig
from pockettts.whisper import WhisperASR

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9._+=-]+")


class EvalError(RuntimeError):
    """A run that cannot start or cannot go on (bad checkpoint, settings clash, empty test set)."""


# -- naming -------------------------------------------------------------------------------------------
def open_checkpoint(path: str | Path) -> ExportedModel:
    """The exported FlowLM to evaluate; an ``EvalError`` naming it when it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise EvalError(f"checkpoint {path} does not exist")
    try:
        return read_export(path)
    except Exception as err:  # safetensors raises its own error types for non-safetensors files
        raise EvalError(f"checkpoint {path}: {err}") from err


def checkpoint_info(export: ExportedModel) -> dict[str, Any]:
    """What an exported FlowLM says about itself: a short ``name``, ``step`` and ``ema`` when its
    metadata records them, its context-noise maximum level (0 without context noise: the knob of
    the noise ablation) and depth, and the file's sha256 (a retrained file is another checkpoint)."""
    path, config = export.path, export.flow_lm.config
    noise = config.get("context_noise") or {}
    name = path.stem
    if path.parent.name == "export" and path.parent.parent.name not in ("", name):
        name = f"{path.parent.parent.name}-{name}"  # <run>/export/teacher.safetensors -> <run>-teacher
    if export.step is not None:
        name += f"-step{export.step}"
    if export.ema is not None:
        name += "-ema" if export.ema else "-raw"
    return {
        "name": _UNSAFE.sub("_", name),
        "path": str(path),
        "step": export.step,
        "ema": export.ema,
        "context_noise": float(noise.get("max_level", 1.0)) if noise else 0.0,  # ContextNoise's default
        "num_layers": config.get("num_layers"),
        "sha256": _sha256(path),
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def asr_name(whisper: str, beam_size: int | None, language: str | None, loop_guard: bool = False) -> str:
    """``tiny.en`` for ``checkpoints/whisper/tiny.en.pt`` or the model name ``tiny.en``; beam, loop
    guard and a non-English language appended."""
    name = Path(whisper).name.removesuffix(".pt")
    if beam_size is not None:
        name += f"_beam{beam_size}"
    if loop_guard:
        name += "_guard"
    if language not in (None, "en"):
        name += f"_{language}"
    return name


def _num(value: float | str) -> str:
    return value if isinstance(value, str) else f"{value:g}"


def results_name(knobs: dict[str, Any]) -> str:
    """The results directory's name: every knob that changes a number, e.g.
    ``student-3fa2c1d0-cfg1.5-t0.3-eos-4-seed0-asr_tiny.en-norm_whisper+plain`` (name, the first hex
    digits of the weights' sha256, generation knobs, seed, ASR, normalisers). The always-set knobs always
    appear; the rarely-set ones only when set, so the common names stay short."""
    parts = [
        knobs["checkpoint"],
        knobs["checkpoint_sha"],  # a retrained checkpoint at the same path gets its own directory
        f"cfg{_num(knobs['cfg_scale'])}",
        f"t{_num(knobs['temperature'])}",
        f"eos{_num(knobs['eos_threshold'])}",
    ]
    optional = [
        ("noise_clamp", "clamp"),
        ("frames_after_eos", "after"),
        ("max_tokens", "tok"),
        ("max_frames", "frames"),
        ("head_steps", "steps"),
        ("max_voice_seconds", "voice"),
        ("max_items", "n"),
        ("generation_batch_size", "bs"),
        ("precision", ""),
        ("device", ""),
    ]
    parts += [f"{tag}{_num(knobs[key])}" for key, tag in optional if knobs.get(key) is not None]
    if knobs.get("vae"):
        parts.append(f"vae_{Path(knobs['vae']).stem}")
    parts += [f"seed{knobs['seed']}", f"asr_{knobs['asr']}", "norm_" + "+".join(knobs["normalizers"])]
    if knobs.get("speaker_embedder"):
        parts.append(f"sim_{knobs['speaker_embedder']}")
    if knobs.get("quality_scorer"):
        parts.append(f"q_{knobs['quality_scorer']}")
    return _UNSAFE.sub("_", "-".join(parts))


def generation_batch_size(cfg: EvalConfig) -> int:
    """``cfg.generation_batch_size``; unset, 1 on a CPU (each item alone, the exact path) and
    ``asr_batch_size`` on a GPU (one item at a time leaves it idle)."""
    if cfg.generation_batch_size is not None:
        return cfg.generation_batch_size
    return cfg.asr_batch_size if resolve_device(cfg.device).type == "cuda" else 1


def eval_knobs(cfg: EvalConfig, checkpoint: dict[str, Any], testset: str) -> dict[str, Any]:
    """Every setting that changes a number of the run (``results.json`` ``knobs``); the device type
    is one (CUDA draws other noise than the CPU for a seed, and Whisper decodes in float16 there)."""
    sampling, defaults = cfg.sampling, SamplingOptions()
    batch_size, device = generation_batch_size(cfg), resolve_device(cfg.device)
    return {
        "testset": testset,
        "checkpoint": checkpoint["name"],
        "checkpoint_sha": checkpoint["sha256"][:8],
        "step": checkpoint["step"],
        "ema": checkpoint["ema"],
        "context_noise": checkpoint["context_noise"],
        "cfg_scale": float(sampling.cfg_scale),
        "temperature": float(sampling.temperature),
        "eos_threshold": float(sampling.eos_threshold),
        "noise_clamp": sampling.noise_clamp,
        "frames_after_eos": sampling.frames_after_eos,
        "max_frames": sampling.max_frames,
        # defaults dropped so they stay out of the directory name
        "max_tokens": None if sampling.max_tokens == defaults.max_tokens else sampling.max_tokens,
        "head_steps": None if sampling.head_steps == defaults.head_steps else sampling.head_steps,
        "max_voice_seconds": None if cfg.max_voice_seconds == 30 else cfg.max_voice_seconds,
        "max_items": cfg.max_items,
        "generation_batch_size": None if batch_size == 1 else batch_size,
        "precision": None if cfg.precision == "float32" else cfg.precision,
        "device": None if device.type == "cpu" else device.type,
        "vae": cfg.vae,
        "seed": int(sampling.seed),
        "asr": asr_name(cfg.whisper, cfg.beam_size, cfg.language, cfg.loop_guard),
        "normalizers": list(cfg.normalizers),
        "speaker_embedder": cfg.speaker_embedder,
        "quality_scorer": cfg.quality_scorer,
    }


# -- scoring components -------------------------------------------------------------------------------
@dataclass
class Scorers:
    asr: WhisperASR
    speaker: Any | None  # pockettts.eval.speaker embedder (.name, .embed(audio [T], sr) -> [D])
    quality: Any | None  # pockettts.eval.quality scorer (.name, .score(audio [T], sr) -> dict)


def build_scorers(cfg: EvalConfig, device: torch.device) -> Scorers:
    """Load every scorer on ``device`` before any generation, so a bad checkpoint fails in seconds,
    not hours. On a GPU Whisper decodes ``asr_batch_size`` items at once."""
    asr = WhisperASR(
        cfg.whisper, language=cfg.language, beam_size=cfg.beam_size, loop_guard=cfg.loop_guard, device=device,
        batch_size=cfg.asr_batch_size if device.type == "cuda" else 1,
    )  # fmt: skip
    speaker = quality = None
    if cfg.speaker_embedder:
        speaker = build_speaker_embedder(cfg.speaker_embedder, cfg.speaker_checkpoint, device)
    if cfg.quality_scorer:
        quality = build_quality_scorer(cfg.quality_scorer, cfg.quality_checkpoint, device)
    return Scorers(asr, speaker, quality)


# -- one item -----------------------------------------------------------------------------------------
def time_to_first_audio(tts: TextToSpeech, text: str, voice: VoiceState, options: SamplingOptions) -> float:
    """Seconds until the streaming path yields its first 80 ms chunk (text prefill + one frame + decode)."""
    start = time.perf_counter()
    stream = tts.stream(text, voice, options)
    next(stream, None)
    synchronize(tts.device)
    seconds = time.perf_counter() - start
    stream.close()
    return seconds


def generate_group(
    tts: TextToSpeech, texts: list[str], voices: list[VoiceState], seeds: list[int], options: SamplingOptions
) -> list[tuple[Generation, float]]:
    """``(generation, wall seconds)`` per request: ``generate`` for one, ``generate_batch`` for several
    (the batch's wall time shared out by audio length; the total is exact). Audio and latents are
    returned on the CPU, where they are scored and written."""
    start = time.perf_counter()
    if len(texts) == 1:
        generations = [tts.generate(texts[0], voices[0], dataclasses.replace(options, seed=seeds[0]))]
    else:
        generations = tts.generate_batch(texts, voices, options, seeds)
    synchronize(tts.device)
    wall = time.perf_counter() - start
    generations = [dataclasses.replace(g, audio=g.audio.cpu(), latents=g.latents.cpu()) for g in generations]
    total = sum(g.audio.numel() for g in generations)
    return [(g, wall * g.audio.numel() / total if total else wall / len(generations)) for g in generations]


def _wav_name(item_id: str) -> str:
    return _UNSAFE.sub("_", item_id) + ".wav"


class _EmbeddingCache:
    """Speaker embeddings of prompt and reference recordings, each computed once (LibriSpeech-PC
    reuses prompts)."""

    def __init__(self, embedder, sample_rate: int):
        self.embedder, self.sample_rate, self.cache = embedder, sample_rate, {}

    def prompt(self, item: EvalItem) -> torch.Tensor:
        key = ("prompt", item.prompt_audio, item.prompt_offset, item.prompt_duration)
        if key not in self.cache:
            self.cache[key] = self.embedder.embed(
                load_prompt_audio(item, self.sample_rate)[0], self.sample_rate
            )
        return self.cache[key]

    def reference(self, item: EvalItem) -> torch.Tensor:
        key = ("reference", item.reference_audio, item.reference_offset, item.reference_duration)
        if key not in self.cache:
            audio = load_reference_audio(item, self.sample_rate)[0]
            self.cache[key] = self.embedder.embed(audio, self.sample_rate)
        return self.cache[key]


# -- the run ------------------------------------------------------------------------------------------
def dirname_for_testset(name: str, options: dict[str, Any]) -> str:
    """The test set's folder: its name, plus the options that change which items or prompts it has
    (file locations do not)."""
    label = name
    if options.get("prompt_seconds") is not None:
        label += f"-prompt{_num(options['prompt_seconds'])}s"
    if options.get("seed") is not None:
        label += f"-pseed{options['seed']}"
    if options.get("prompt_dir") is not None:  # other prompt recordings (e.g. enhanced ones)
        label += f"-prompts_{Path(options['prompt_dir']).name}"
    return _UNSAFE.sub("_", label)


def spread(count: int, wanted: int | None) -> list[int]:
    """Indices of ``wanted`` of ``count`` items spread evenly (all when ``wanted`` is None or not
    smaller): a subset of a speaker-sorted manifest still covers every speaker."""
    if wanted is None or wanted >= count:
        return list(range(count))
    return [i * count // wanted for i in range(wanted)]


def evaluate(cfg: EvalConfig) -> dict[str, Any]:
    """Run (or resume) the evaluation described by ``cfg``; returns the ``results.json`` content."""
    device = resolve_device(cfg.device)
    export = open_checkpoint(cfg.checkpoint)
    checkpoint = checkpoint_info(export)
    # null options mean "the loader's default"
    options = {k: v for k, v in dict(cfg.testset_options or {}).items() if v is not None}
    try:
        testset = load_testset(cfg.testset, **options)
    except TypeError as err:  # an option the chosen test set does not take
        raise EvalError(f"test set {cfg.testset!r}: {err} (options given: {sorted(options)})") from err
    items = [(index, testset.items[index]) for index in spread(len(testset.items), cfg.max_items)]
    if not items:
        raise EvalError(f"test set {testset.name!r} has no usable items ({len(testset.missing)} missing)")
    scorers = build_scorers(cfg, device)
    knobs = eval_knobs(cfg, checkpoint, testset.name)
    out = Path(cfg.results_root) / dirname_for_testset(testset.name, options) / results_name(knobs)
    settings = {
        "knobs": knobs, "checkpoint": checkpoint, "testset_options": options, "asr": scorers.asr.options,
        "speaker_checkpoint": cfg.speaker_checkpoint,
        "quality_primary": scorers.quality.primary if scorers.quality else None,
        # only when set, so that results made before the option resume
        **({"quality_checkpoint": cfg.quality_checkpoint} if cfg.quality_checkpoint else {}),
    }  # fmt: skip
    _claim(out, settings)
    done = _recover_rows(out / "items.jsonl")
    todo = [(index, item) for index, item in items if item.id not in done]
    log.info("%s: %d items, %d already done, %d to go", out, len(items), len(items) - len(todo), len(todo))
    failed: list[dict[str, str]] = []
    if todo:
        tts = TextToSpeech.load(export, cfg.vae, device, precision=cfg.precision)
        cache = _EmbeddingCache(scorers.speaker, tts.vae.sample_rate) if scorers.speaker else None
        progress = tqdm(total=len(todo), desc=f"eval {testset.name}")
        for start in range(0, len(todo), cfg.asr_batch_size):
            spoken = _speak(tts, cfg, todo[start : start + cfg.asr_batch_size], out, failed, progress)
            if spoken:
                _append_rows(
                    out / "items.jsonl",
                    _score_batch(spoken, scorers, cache, cfg.normalizers, tts.vae.sample_rate),
                )
        progress.close()
    rows = _read_rows(out / "items.jsonl")
    done_rows = [rows[item.id] for _, item in items if item.id in rows]
    results = _aggregate(done_rows, settings, testset, failed, out, device)
    atomic_write_text(out / "results.json", json.dumps(results, indent=2) + "\n")
    atomic_write_text(out / "results.md", _markdown(results))
    write_run_page(out)
    return results


def _claim(out: Path, settings: dict[str, Any]) -> None:
    """Create ``out`` with ``settings.json``, or check an existing one was made with the same settings."""
    path = out / "settings.json"
    if path.is_file():
        previous = json.loads(path.read_text())
        if previous != json.loads(json.dumps(settings)):
            changed = sorted(k for k in {**previous, **settings} if previous.get(k) != settings.get(k))
            raise EvalError(
                f"{out} holds results made with other settings ({', '.join(changed)} differ, e.g. a "
                "retrained checkpoint); delete it or choose another results_root"
            )
        return
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=2) + "\n")


def _speak(
    tts: TextToSpeech, cfg: EvalConfig, todo: list[tuple[int, EvalItem]], out: Path, failed: list, progress
) -> list[tuple[EvalItem, dict[str, Any], torch.Tensor]]:
    """Voice states, then generation in groups of ``generation_batch_size``; the wavs are kept.
    Returns ``(item, row without transcript, audio [T])``; a failing item is logged in ``failed``."""
    rate, sampling = tts.vae.sample_rate, cfg.sampling
    ready = []
    for index, item in todo:
        try:
            start = time.perf_counter()
            # the prompt window, mono, at the training loudness (-23 LUFS), as voices were in training
            prompt = load_prompt_audio(item, rate)
            voice = tts.voice(prompt, rate, cfg.max_voice_seconds)
            seeded = dataclasses.replace(sampling, seed=sampling.seed + index)
            ttfa = time_to_first_audio(tts, item.text, voice, seeded)
            voice_seconds = time.perf_counter() - start - ttfa
            kept = _keep_prompt_and_reference(item, prompt, cfg.max_voice_seconds, out, rate)
            ready.append((index, item, voice, voice_seconds, ttfa, kept))
        except Exception as err:  # one bad item (unreadable prompt, unspeakable text) is not the run
            _fail(item, err, failed, progress)
    spoken = []
    size = generation_batch_size(cfg)
    for group in [ready[i : i + size] for i in range(0, len(ready), size)]:
        generated = _generate_safely(tts, cfg, group)
        for (index, item, _, voice_seconds, ttfa, kept), result in zip(group, generated):
            if isinstance(result, Exception):
                _fail(item, result, failed, progress)
                continue
            generation, seconds = result
            row = _row(item, sampling.seed + index, generation, seconds, voice_seconds, ttfa, out, rate)
            spoken.append((item, row | kept, generation.audio))
            progress.update()
    return spoken


def _keep_prompt_and_reference(
    item: EvalItem, prompt: torch.Tensor, max_seconds: float, out: Path, rate: int
) -> dict[str, str | None]:
    """Keep the prompt ``[1, T]`` cut as ``TextToSpeech.voice`` cuts it, and the reference recording,
    as FLAC under ``prompts/`` and ``references/`` for the listening page (``html_page``); returns
    their paths relative to ``out`` (``kept_reference`` None without a reference)."""
    name = Path(_wav_name(item.id)).with_suffix(".flac")
    kept = {"kept_prompt": str("prompts" / name), "kept_reference": None}
    save_audio(out / kept["kept_prompt"], end_on_pause(prompt[..., : int(max_seconds * rate)], rate), rate)
    if item.reference_audio is not None:
        kept["kept_reference"] = str("references" / name)
        save_audio(out / kept["kept_reference"], load_reference_audio(item, rate), rate)
    return kept


def _generate_safely(
    tts: TextToSpeech, cfg: EvalConfig, group: list[tuple]
) -> list[tuple[Generation, float] | Exception]:
    """``generate_group`` over ``(index, item, voice, ...)`` members; when that raises, each member
    alone, so that only the bad request fails."""

    def attempt(members):
        seeds = [cfg.sampling.seed + m[0] for m in members]
        texts, voices = [m[1].text for m in members], [m[2] for m in members]
        return generate_group(tts, texts, voices, seeds, cfg.sampling)

    try:
        return attempt(group)
    except Exception as err:
        if len(group) == 1:
            return [err]
    results: list[tuple[Generation, float] | Exception] = []
    for member in group:
        try:
            results += attempt([member])
        except Exception as err:
            results.append(err)
    return results


def _fail(item: EvalItem, err: BaseException, failed: list, progress) -> None:
    log.error("item %s: %s", item.id, err)
    failed.append({"id": item.id, "error": f"{type(err).__name__}: {err}"})
    progress.update()


def _row(item: EvalItem, seed: int, generation: Generation, generation_seconds: float, voice_seconds: float,
         ttfa: float, out: Path, rate: int) -> dict[str, Any]:  # fmt: skip
    """An item's row before scoring; writes its wav (none for empty output)."""
    audio = generation.audio
    seconds = audio.shape[-1] / rate
    wav = Path("wavs") / _wav_name(item.id)
    if seconds:
        save_audio(out / wav, audio[None], rate)
    return {
        "id": item.id, "text": item.text, "speaker": item.speaker, "seed": seed,
        "prompt_audio": str(item.prompt_audio), "prompt_offset": item.prompt_offset,
        "prompt_duration": item.prompt_duration,
        "reference_audio": str(item.reference_audio) if item.reference_audio else None,
        "wav": str(wav) if seconds else None, "audio_seconds": seconds, "voice_seconds": voice_seconds,
        "generation_seconds": generation_seconds, "rtf": generation_seconds / seconds if seconds else None,
        "ttfa_seconds": ttfa, "eos_reached": bool(generation.eos_reached),
        "silent": seconds == 0 or is_silent(audio[None], rate),
    }  # fmt: skip


@torch.no_grad()
def _score_batch(batch, scorers: Scorers, cache, normalizers, rate: int) -> list[dict[str, Any]]:
    """Transcribe a batch of ``(item, row, audio [T])`` and add every metric; the rows to write."""
    audible = [(row, audio) for _, row, audio in batch if audio.numel()]
    texts = scorers.asr.transcribe_many([audio for _, audio in audible], rate, progress=False)
    transcripts = {row["id"]: text for (row, _), text in zip(audible, texts)}
    rows = []
    for item, row, audio in batch:
        hypothesis = transcripts.get(row["id"], "")  # no audio: every word deleted
        row["transcript"] = hypothesis
        row.update(utterance_scores(item.text, hypothesis, normalizers))  # rates and their counts
        row["sim_prompt"] = row["sim_reference"] = row["quality"] = None
        if audio.numel():
            # silent output has no voice to compare (counted as silent); its quality is scored
            if cache is not None and not row["silent"]:
                embedding = scorers.speaker.embed(audio, rate)
                row["sim_prompt"] = cosine_similarity(embedding, cache.prompt(item))
                if item.reference_audio is not None:
                    row["sim_reference"] = cosine_similarity(embedding, cache.reference(item))
            if scorers.quality is not None:
                row["quality"] = scorers.quality.score(audio, rate)
        rows.append(row)
    return rows


def _read_rows(path: Path) -> dict[str, dict[str, Any]]:
    """Rows of ``items.jsonl`` by id."""
    rows = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            rows[row["id"]] = row
    return rows


def _recover_rows(path: Path) -> dict[str, dict[str, Any]]:
    """Rows of ``items.jsonl`` by id, after dropping a last line cut short by a crash (its item is
    redone), so that new rows are appended after a complete line."""
    if not path.is_file():
        return {}
    lines = path.read_text(encoding="utf-8").splitlines()
    rows = {}
    for number, line in enumerate(lines, start=1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            if number < len(lines):
                raise EvalError(f"{path}:{number} is not JSON (only a crash's last line may be cut)") from err
            log.warning("%s: dropped the last line, cut short by an interrupted run", path)
            atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows.values()))
            break
        rows[row["id"]] = row
    return rows


def _append_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write("".join(json.dumps(row) + "\n" for row in rows))
        handle.flush()


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _aggregate(rows, settings, testset, failed, out: Path, device: torch.device) -> dict[str, Any]:
    """``results.json``: knobs, a flat ``summary`` (the table's numbers) and the detailed metrics."""
    if not rows:
        raise EvalError(f"no item of {testset.name!r} could be evaluated; see the errors above")
    knobs = settings["knobs"]
    refs, hyps = [r["text"] for r in rows], [r["transcript"] for r in rows]
    wer, cer = {}, {}
    for name in knobs["normalizers"]:
        wer[name] = {k: v for k, v in word_error_rate(refs, hyps, name).items() if k != "utterance_wer"}
        cer[name] = {k: v for k, v in character_error_rate(refs, hyps, name).items() if k != "utterance_cer"}
    audio = sum(r["audio_seconds"] for r in rows)
    quality_keys = sorted({k for r in rows for k in (r["quality"] or {})})
    summary = {
        "items": len(rows),
        **{f"wer_{n}": wer[n]["wer"] for n in wer},
        **{f"mean_wer_{n}": wer[n]["mean_utterance_wer"] for n in wer},
        **{f"cer_{n}": cer[n]["cer"] for n in cer},
        "sim_prompt": _mean(r["sim_prompt"] for r in rows),
        "sim_reference": _mean(r["sim_reference"] for r in rows),
        **{f"quality_{k}": _mean((r["quality"] or {}).get(k) for r in rows) for k in quality_keys},
        "silent": sum(r["silent"] for r in rows),
        "no_eos": sum(not r["eos_reached"] for r in rows),
        "missing": len(testset.missing),
        "skipped": len(testset.skipped),
        "failed": len(failed),
        "rtf": sum(r["generation_seconds"] for r in rows) / audio if audio else None,
        "ttfa_seconds": statistics.median(r["ttfa_seconds"] for r in rows),
        "audio_seconds": audio,
        **summary_intervals(rows),  # "<metric>_ci": [low, high], 95% bootstrap over items
    }
    return {
        "results_dir": str(out),
        "knobs": knobs,
        "summary": summary,
        "wer": wer,
        "cer": cer,
        "missing": [{"id": i, "path": str(p)} for i, p in testset.missing],
        "skipped": [{"id": i, "reason": r} for i, r in testset.skipped],
        "failed": failed,
        "quality_primary": settings["quality_primary"],
        "intervals": BOOTSTRAP,
        "checkpoint": settings["checkpoint"],
        "testset_options": settings["testset_options"],
        "asr": settings["asr"],
        "speaker_checkpoint": settings["speaker_checkpoint"],
        "machine": {
            "cpu": _cpu_name(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "device": describe_device(device),
        },
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _markdown(results: dict[str, Any]) -> str:
    lines = [f"# {results['knobs']['testset']}: {results['knobs']['checkpoint']}", ""]
    lines += markdown_table([results]).splitlines()
    if results["missing"]:
        lines += [
            "",
            f"Missing audio ({len(results['missing'])}): " + ", ".join(m["id"] for m in results["missing"]),
        ]
    if results["skipped"]:
        lines += ["", "Skipped: " + ", ".join(f"{s['id']} ({s['reason']})" for s in results["skipped"])]
    if results["failed"]:
        lines += ["", "Failed items: " + ", ".join(f"{f['id']} ({f['error']})" for f in results["failed"])]
    lines += ["", f"Results directory: `{results['results_dir']}`", ""]
    return "\n".join(lines)


def run(cfg: EvalConfig | DictConfig) -> int:
    """The ``eval.py`` job: evaluate, print the table; exit code 1 with the reason logged on bad input."""
    if isinstance(cfg, DictConfig):  # from Hydra: the schema's dataclasses, ``cfg.sampling`` included
        cfg = OmegaConf.to_object(cfg)
    try:
        results = evaluate(cfg)
    except (EvalError, TestSetError, AudioError, FileNotFoundError, ValueError) as err:
        log.error("%s", err)
        return 1
    print((Path(results["results_dir"]) / "results.md").read_text())
    return 0
