"""Corpus preparation throughput: ``pockettts-data from-hf`` on a synthetic local Hugging Face
dataset (no network), serial and with worker processes, and what that means for real corpora.

    python benchmarks/corpus_prep.py [--items 200] [--seconds 5.6] [--sample-rate 24000] [--workers 1 2]

The dataset is built in memory with ``datasets.Dataset.from_dict``: speech-length FLAC clips
(noise shaped by a syllable-rate envelope, so the FLAC encoder works as hard as on speech) at
``--sample-rate`` (LibriTTS-R ships 24 kHz; 44.1/48 kHz sources add a resampling cost). Each row is
decoded, made mono, resampled to 24 kHz, loudness-normalised and written as FLAC, as in a real run.

Prints items/s, items/s per core and audio seconds converted per second per core, then projects the
core-hours, and the wall-clock hours on this machine's cores and on 64, for LibriTTS-R (585 h) and
an 88,000-hour mix, from the per-core rate of the fewest workers measured.
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from pathlib import Path

import datasets
import numpy as np
import soundfile as sf
import torch

from pockettts.data.sources import HFSourceConfig, manifest_from_hf

CORPORA_HOURS = {"LibriTTS-R": 585.0, "88k-hour mix": 88_000.0}


def synthetic_dataset(items: int, seconds: float, sample_rate: int, seed: int = 0) -> datasets.Dataset:
    """``items`` rows (``audio`` FLAC bytes, ``text``, ``speaker_id``, ``id``) of ``seconds`` each."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    audio = []
    for index in range(items):
        envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t + rng.uniform(0, 2 * np.pi))
        clip = (0.1 * rng.standard_normal(t.size) * envelope).astype(np.float32)
        buffer = io.BytesIO()
        sf.write(buffer, clip, sample_rate, format="FLAC")
        audio.append({"bytes": buffer.getvalue(), "path": f"{index}.flac"})
    rows = {
        "audio": audio,
        "text": [f"Synthetic sentence number {index}." for index in range(items)],
        "speaker_id": [index % 10 for index in range(items)],
        "id": [f"item{index:06d}" for index in range(items)],
    }
    return datasets.Dataset.from_dict(rows).cast_column("audio", datasets.Audio())


def measure(dataset: datasets.Dataset, workers: int) -> float:
    """Wall seconds to convert ``dataset`` with ``workers`` processes into a fresh folder."""
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        counts = manifest_from_hf(
            HFSourceConfig(name="synthetic"), Path(folder) / "train.jsonl", dataset, False, workers
        )
        wall = time.perf_counter() - start
    if counts["written"] != len(dataset):
        raise RuntimeError(f"expected {len(dataset)} items written, got {counts}")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=5.6, help="clip length (LibriTTS: 585 h / 375k)")
    parser.add_argument("--sample-rate", type=int, default=24_000)
    parser.add_argument("--workers", type=int, nargs="+", default=sorted({1, os.cpu_count() or 1}))
    args = parser.parse_args()

    dataset = synthetic_dataset(args.items, args.seconds, args.sample_rate)
    torch.set_num_threads(1)  # the serial run on one core, as each worker process is
    measure(dataset.select(range(min(4, args.items))), 1)  # warm-up: first-call costs, not throughput
    print(f"{args.items} items x {args.seconds} s at {args.sample_rate} Hz, {os.cpu_count()} cores here")
    print(f"{'workers':>7}{'items/s':>10}{'items/s/core':>14}{'audio s/s/core':>16}")
    per_core = {}
    for workers in args.workers:
        rate = args.items / measure(dataset, workers)
        per_core[workers] = rate / workers
        print(f"{workers:>7}{rate:>10.1f}{per_core[workers]:>14.1f}{per_core[workers] * args.seconds:>16.0f}")

    # From the fewest workers measured (1: one core undisturbed), scaled linearly with cores; the rows
    # above show how far that holds on this machine.
    fewest, cores = min(per_core), os.cpu_count() or 1
    rate = per_core[fewest]
    print(f"\nprojection at {rate:.1f} items/s per core ({fewest} worker(s)), {args.seconds} s per item:")
    for corpus, hours in CORPORA_HOURS.items():
        core_hours = hours / (rate * args.seconds)  # audio hours / audio seconds per second per core
        items = hours * 3600 / args.seconds
        print(
            f"  {corpus:<14}{hours:>9,.0f} h {items:>12,.0f} items: {core_hours:>8,.1f} core-hours, "
            f"{core_hours / cores:>8,.1f} h on {cores} core(s), {core_hours / 64:>6,.2f} h on 64"
        )


if __name__ == "__main__":
    main()
