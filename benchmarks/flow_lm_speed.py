"""CPU speed of the backbone + LSD head generating latents (no codec): the released student size
(6 layers) and the teacher (24 layers), random weights.

    .venv/bin/python benchmarks/flow_lm_speed.py [--layers 6 24] [--frames 50] [--threads 2]

Prints the prefill time (voice prompt + text) and the time per generated 80 ms frame, with and
without CFG (a second, unconditioned stream), and the real-time factor of generation alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from pockettts.models.flow_lm import FlowLM
from pockettts.models.sampling import SamplingOptions


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--layers", type=int, nargs="+", default=[6, 24])
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--voice-seconds", type=float, default=5.0)
    parser.add_argument("--text-tokens", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    columns = ("layers", "params", "prefill s", "ms/frame", "RTF", "ms/frame cfg", "RTF cfg")
    print("  ".join(f"{c:>12}" for c in columns))
    for layers in args.layers:
        torch.manual_seed(0)
        model = FlowLM(num_layers=layers).eval()
        voice = torch.randn(int(args.voice_seconds * 12.5), 32)
        tokens = torch.randint(0, 4000, (args.text_tokens,))
        with torch.inference_mode():
            start = time.perf_counter()
            model.prefill(voice, tokens)
            prefill = time.perf_counter() - start
            timings = []
            for cfg in (1.0, 2.0):
                never_stops = SamplingOptions(cfg_scale=cfg, eos_threshold=1e9)
                model.generate(voice, tokens, dataclasses.replace(never_stops, max_frames=2))  # warm-up
                start = time.perf_counter()
                model.generate(voice, tokens, dataclasses.replace(never_stops, max_frames=args.frames))
                timings.append((time.perf_counter() - start - prefill * (2 if cfg != 1 else 1)) / args.frames)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        plain, guided = (t * 1000 for t in timings)
        row = (
            layers,
            f"{params:.1f}M",
            f"{prefill:.3f}",
            f"{plain:.1f}",
            f"{plain / 80:.3f}",
            f"{guided:.1f}",
            f"{guided / 80:.3f}",
        )
        print("  ".join(f"{c:>12}" for c in row))


if __name__ == "__main__":
    main()
