"""Data loading throughput of the two datamodules on a manifest corpus (default: the demo corpus).

    python benchmarks/data_loading.py [--data data/demo] [--workers 0 2] [--batches 30]

Prints crops/s (VAE loader, 1 s crops, batch 16) and utterances/s and audio-seconds/s (bucketed
TTS loader), per worker count, so a change to audio loading can be measured side by side.
"""

from __future__ import annotations

import argparse
import time

from pockettts.data.datamodule import CropDataModule, UtteranceDataModule


def measure(loader, batches: int) -> tuple[int, float, float]:
    """Items, audio seconds and wall seconds for ``batches`` batches (after one warm-up batch)."""
    iterator = iter(loader)
    next(iterator)
    items = seconds = 0
    start = time.perf_counter()
    for _, batch in zip(range(batches), iterator):
        items += batch["audio"].shape[0]
        seconds += float(batch["lengths"].sum()) / 24000
    return items, seconds, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default="data/demo")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--batches", type=int, default=30)
    args = parser.parse_args()
    common = {"data_dir": args.data, "train_manifest": "train.jsonl", "valid_manifest": "valid.jsonl"}
    print(f"{'loader':<28}{'workers':>8}{'items/s':>10}{'audio s/s':>11}")
    for workers in args.workers:
        for name, dm in (
            (
                "crops 1.0s x16",
                CropDataModule(crop_seconds=1.0, batch_size=16, num_workers=workers, **common),
            ),
            ("utterances <=1500 frames", UtteranceDataModule(max_frames=1500, num_workers=workers, **common)),
        ):
            dm.setup()
            items, seconds, wall = measure(dm.train_dataloader(), args.batches)
            print(f"{name:<28}{workers:>8}{items / wall:>10.1f}{seconds / wall:>11.1f}")


if __name__ == "__main__":
    main()
