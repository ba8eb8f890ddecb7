"""The offline demo corpus: multi-speaker English speech from Debian's TTS voices.

Every sentence is synthesised separately by each voice, trimmed, and utterances are built by
joining two or more sentences with short pauses, so the exact sentence boundaries are known
(``segments`` in the manifest) and later stages can cut voice prompts at them. Sentences are split
into train/valid/test before anything is synthesised, so no sentence crosses splits.

The build is deterministic given the seed, resumable (synthesised sentences are cached per voice),
and a finished corpus whose recipe has not changed is reused instantly.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import random
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from pockettts.audio import SAMPLE_RATE, load_audio, loudness_normalize, save_audio
from pockettts.data.manifest import ManifestItem, TimedSpan, write_manifest
from pockettts.io import atomic_write, atomic_write_text

log = logging.getLogger(__name__)

DEFAULT_SENTENCES = Path(__file__).with_name("demo_sentences.txt")
SPLITS = ("train", "valid", "test")

# Recorded speakers available from Debian main (see docs/data.md): flite's clustergen voices awb
# (Scottish male), rms (US male), slt (US female) and its kal16 diphone voice (US male); festival's
# ked diphone voice (US male); plus one espeak-ng formant voice (female) for a sixth timbre.
DEFAULT_VOICES = (
    "flite:awb",
    "flite:rms",
    "flite:slt",
    "flite:kal16",
    "festival:ked_diphone",
    "espeak:en-us+f3",
)

_APT_HINT = (
    "install the Debian voices: apt-get install -y espeak-ng flite festival festvox-kallpc16k "
    "festvox-kdlpc16k festvox-us-slt-hts (or run scripts/setup.sh)"
)


class SynthesisError(RuntimeError):
    """A TTS engine is missing or failed; the message names the voice and sentence."""


@dataclass
class DemoCorpusConfig:
    """Recipe of the demo corpus. Any change gives a different fingerprint and a rebuild."""

    voices: list[str] = field(default_factory=lambda: list(DEFAULT_VOICES))
    sentences_file: str | None = None  # default: the bundled CC0 sentence list
    max_sentences: int | None = None  # use only the first N sentences (after shuffling)
    valid_fraction: float = 0.05
    test_fraction: float = 0.05
    # Fraction of the train sentences each speaker reads (a different random subset per speaker).
    train_sentences_per_speaker: float = 0.5
    min_sentences_per_utterance: int = 2
    max_sentences_per_utterance: int = 3
    pause_range: tuple[float, float] = (0.25, 0.6)
    edge_silence_range: tuple[float, float] = (0.1, 0.25)
    seed: int = 1234
    workers: int = 2
    # Keep per-sentence synthesis after a finished build (speeds up rebuilding with a new seed).
    keep_sentence_cache: bool = False


def read_sentences(path: str | Path | None) -> list[str]:
    """Read one sentence per line, dropping blanks and duplicates (first occurrence kept)."""
    lines = Path(path or DEFAULT_SENTENCES).read_text(encoding="utf-8").splitlines()
    sentences = list(dict.fromkeys(s.strip() for s in lines if s.strip()))
    if not sentences:
        raise ValueError(f"no sentences in {path or DEFAULT_SENTENCES}")
    return sentences


def split_sentences(sentences: list[str], config: DemoCorpusConfig) -> dict[str, list[str]]:
    """Seeded disjoint train/valid/test split of the sentence list."""
    order = list(sentences)
    random.Random(config.seed).shuffle(order)
    if config.max_sentences is not None:
        order = order[: config.max_sentences]
    n_valid = max(1, round(len(order) * config.valid_fraction))
    n_test = max(1, round(len(order) * config.test_fraction))
    if n_valid + n_test >= len(order):
        raise ValueError(f"{len(order)} sentences are too few for train/valid/test splits")
    return {
        "test": order[:n_test],
        "valid": order[n_test : n_test + n_valid],
        "train": order[n_test + n_valid :],
    }


def speaker_name(voice: str) -> str:
    """``flite:slt`` -> ``flite_slt``; ``espeak:en-us+f3`` -> ``espeak_en-us_f3``."""
    return voice.replace(":", "_").replace("+", "_")


def check_engines(voices: list[str]) -> None:
    """Fail early, naming the missing program, before any work is done."""
    programs = {"flite": "flite", "festival": "festival", "espeak": "espeak-ng"}
    for voice in voices:
        engine = voice.split(":", 1)[0]
        if engine not in programs:
            raise SynthesisError(f"unknown engine in voice {voice!r}; use flite:, festival: or espeak:")
        if shutil.which(programs[engine]) is None:
            raise SynthesisError(f"voice {voice!r} needs `{programs[engine]}`, not found: {_APT_HINT}")


def _cache_path(cache_dir: Path, voice: str, sentence: str) -> Path:
    digest = hashlib.sha1(sentence.encode("utf-8")).hexdigest()[:16]
    return cache_dir / speaker_name(voice) / f"{digest}.wav"


def _run(cmd: list[str], voice: str, what: str, stdin: str | None = None) -> None:
    result = subprocess.run(cmd, input=stdin, capture_output=True, text=True)
    if result.returncode != 0:
        raise SynthesisError(f"{voice}: {what} failed ({result.returncode}): {result.stderr.strip()[:400]}")


def _synthesise_batch(voice: str, sentences: list[str], cache_dir: Path) -> None:
    """Synthesise sentences with one voice into the cache (atomic per file).

    The engines write a whole batch into a scratch directory (festival makes it in one process);
    each file is then copied into the cache atomically.
    """
    engine, name = voice.split(":", 1)
    todo = [s for s in sentences if not _cache_path(cache_dir, voice, s).exists()]
    if not todo:
        return
    out_dir = _cache_path(cache_dir, voice, todo[0]).parent
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        tmp_paths = [Path(tmp) / f"{i}.wav" for i in range(len(todo))]
        if engine == "festival":
            # One festival process for the whole batch: its start-up costs ~0.3 s per call.
            script = [f"(voice_{name})"]
            for sentence, path in zip(todo, tmp_paths):
                text = sentence.replace("\\", " ").replace('"', " ")
                script.append(f'(utt.save.wave (utt.synth (Utterance Text "{text}")) "{path}" \'riff)')
            _run(["festival", "--pipe"], voice, "festival batch", stdin="\n".join(script) + "\n")
        else:
            for sentence, path in zip(todo, tmp_paths):
                if engine == "flite":
                    cmd = ["flite", "-voice", name, "-t", sentence, "-o", str(path)]
                else:
                    cmd = ["espeak-ng", "-v", name, "-w", str(path), sentence]
                _run(cmd, voice, f"sentence {sentence!r}")
        for sentence, path in zip(todo, tmp_paths):
            if not path.exists() or path.stat().st_size <= 44:
                raise SynthesisError(f"{voice}: no audio produced for sentence {sentence!r}; {_APT_HINT}")
            atomic_write(_cache_path(cache_dir, voice, sentence), functools.partial(shutil.copyfile, path))


def trim_silence(
    wav: torch.Tensor, sample_rate: int, threshold_db: float = -40.0, margin: float = 0.03
) -> torch.Tensor:
    """Cut leading/trailing audio quieter than ``threshold_db`` below the peak (``[1, T]``)."""
    hop = int(0.01 * sample_rate)
    frames = wav[0, : wav.shape[-1] // hop * hop].view(-1, hop)
    energy = frames.pow(2).mean(dim=1)
    loud = (energy > energy.max() * 10 ** (threshold_db / 10)).nonzero()
    if loud.numel() == 0:
        return wav
    pad = int(margin * sample_rate)
    start = max(0, int(loud[0]) * hop - pad)
    end = min(wav.shape[-1], (int(loud[-1]) + 1) * hop + pad)
    return wav[:, start:end]


def _sentence_audio(cache_dir: Path, voice: str, sentence: str) -> torch.Tensor:
    wav = load_audio(_cache_path(cache_dir, voice, sentence), SAMPLE_RATE)
    return trim_silence(wav, SAMPLE_RATE)


@dataclass
class _UtterancePlan:
    id: str
    voice: str
    split: str
    sentences: list[str]
    pauses: list[float]  # before the first sentence, between sentences, after the last


def plan_utterances(splits: dict[str, list[str]], config: DemoCorpusConfig) -> list[_UtterancePlan]:
    """Decide, from the seed alone, which sentences each speaker reads, grouped into utterances."""
    rng = random.Random(config.seed + 1)
    plans = []
    for voice in config.voices:
        speaker = speaker_name(voice)
        for split in SPLITS:
            pool = list(splits[split])
            rng.shuffle(pool)
            if split == "train":
                keep = max(
                    config.min_sentences_per_utterance, round(len(pool) * config.train_sentences_per_speaker)
                )
                pool = pool[:keep]
            index = 0
            while len(pool) >= config.min_sentences_per_utterance:
                lo, hi = config.min_sentences_per_utterance, config.max_sentences_per_utterance
                n = min(rng.randint(lo, hi), len(pool))
                if 0 < len(pool) - n < lo:  # avoid leaving a remainder too short to use
                    n = len(pool) if len(pool) <= hi else max(lo, len(pool) - lo)
                group, pool = pool[:n], pool[n:]
                edges = [round(rng.uniform(*config.edge_silence_range), 3) for _ in range(2)]
                gaps = [round(rng.uniform(*config.pause_range), 3) for _ in range(len(group) - 1)]
                plans.append(
                    _UtterancePlan(
                        f"{speaker}_{split}_{index:04d}", voice, split, group, [edges[0], *gaps, edges[1]]
                    )
                )
                index += 1
    return plans


def _compose(plan: _UtterancePlan, cache_dir: Path, audio_path: Path, manifest_dir: Path) -> ManifestItem:
    pieces, segments, cursor = [], [], 0
    for i, sentence in enumerate(plan.sentences):
        silence = torch.zeros(1, int(plan.pauses[i] * SAMPLE_RATE))
        pieces.append(silence)
        cursor += silence.shape[-1]
        speech = _sentence_audio(cache_dir, plan.voice, sentence)
        segments.append(TimedSpan(sentence, cursor / SAMPLE_RATE, (cursor + speech.shape[-1]) / SAMPLE_RATE))
        pieces.append(speech)
        cursor += speech.shape[-1]
    pieces.append(torch.zeros(1, int(plan.pauses[-1] * SAMPLE_RATE)))
    wav = loudness_normalize(torch.cat(pieces, dim=-1), SAMPLE_RATE)
    save_audio(audio_path, wav, SAMPLE_RATE)
    return ManifestItem(
        id=plan.id,
        audio=str(audio_path.relative_to(manifest_dir)),
        text=" ".join(plan.sentences),
        speaker=speaker_name(plan.voice),
        language="en",
        duration=round(wav.shape[-1] / SAMPLE_RATE, 4),
        segments=tuple(segments),
    )


def fingerprint(config: DemoCorpusConfig, sentences: list[str]) -> str:
    recipe = {k: v for k, v in asdict(config).items() if k not in ("workers", "keep_sentence_cache")}
    payload = json.dumps({"recipe": recipe, "sentences": sentences}, sort_keys=True, default=list)
    return hashlib.sha1(payload.encode("utf-8")).hexdigest()[:16]


def build_demo_corpus(
    out_dir: str | Path, config: DemoCorpusConfig | None = None, progress: bool = True
) -> dict:
    """Build (or reuse) the demo corpus in ``out_dir``; return its summary (``corpus.json``).

    Writes ``{train,valid,test}.jsonl`` manifests with exact sentence ``segments``, 24 kHz FLAC
    under ``audio/<split>/<speaker>/``, and ``corpus.json`` (recipe, fingerprint, sizes) last, so a
    corpus with a ``corpus.json`` is complete.
    """
    config = config or DemoCorpusConfig()
    out_dir = Path(out_dir)
    sentences = read_sentences(config.sentences_file)
    stamp = fingerprint(config, sentences)
    summary_path = out_dir / "corpus.json"
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        if summary.get("fingerprint") == stamp and all((out_dir / f"{s}.jsonl").is_file() for s in SPLITS):
            log.info("demo corpus %s is up to date (fingerprint %s)", out_dir, stamp)
            return summary
    check_engines(config.voices)
    splits = split_sentences(sentences, config)
    plans = plan_utterances(splits, config)
    cache_dir = out_dir / "sentence_cache"

    needed: dict[str, set[str]] = {v: set() for v in config.voices}
    for plan in plans:
        needed[plan.voice].update(plan.sentences)
    batches = [(voice, chunk) for voice, wanted in needed.items() for chunk in _chunks(sorted(wanted), 64)]
    with ThreadPoolExecutor(max_workers=max(1, config.workers)) as pool:
        jobs = pool.map(lambda job: _synthesise_batch(job[0], job[1], cache_dir), batches)
        for _ in tqdm(jobs, total=len(batches), desc="synthesise", disable=not progress):
            pass

    items: dict[str, list[ManifestItem]] = {s: [] for s in SPLITS}
    with ThreadPoolExecutor(max_workers=max(1, config.workers)) as pool:
        composed = pool.map(
            lambda plan: _compose(
                plan,
                cache_dir,
                out_dir / "audio" / plan.split / speaker_name(plan.voice) / f"{plan.id}.flac",
                out_dir,
            ),
            plans,
        )
        for plan, item in tqdm(zip(plans, composed), total=len(plans), desc="compose", disable=not progress):
            items[plan.split].append(item)

    for split in SPLITS:
        write_manifest(out_dir / f"{split}.jsonl", items[split])
    summary = {
        "fingerprint": stamp,
        "recipe": asdict(config),
        "speakers": [speaker_name(v) for v in config.voices],
        "splits": {
            split: {
                "utterances": len(items[split]),
                "sentences": len(splits[split]),
                "hours": round(sum(i.duration for i in items[split]) / 3600, 4),
            }
            for split in SPLITS
        },
    }
    atomic_write_text(summary_path, json.dumps(summary, indent=2) + "\n")
    if not config.keep_sentence_cache:
        shutil.rmtree(cache_dir, ignore_errors=True)
    return summary


def _chunks(values: list[str], size: int) -> list[list[str]]:
    return [values[i : i + size] for i in range(0, len(values), size)]
