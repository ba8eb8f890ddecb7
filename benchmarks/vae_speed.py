"""CPU speed of the audio VAE at the released codec's size: full-pass and streaming encode/decode.

    .venv/bin/python benchmarks/vae_speed.py [--seconds 10] [--threads 2] [--chunk-frames 1]

Prints the real-time factor (processing time / audio duration; below 1 is faster than real time)
of each path. Streaming decode is what TTS uses: latents arrive one 80 ms frame at a time.
"""

from __future__ import annotations

import argparse
import time

import torch

from pockettts.models.vae import AudioVAE


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--chunk-frames", type=int, default=1, help="latent frames per streaming decode call")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    vae = AudioVAE(weight_norm=False).eval()
    frames = int(args.seconds * vae.frame_rate)
    audio = 0.1 * torch.randn(1, 1, frames * vae.frame_size)
    duration = frames / vae.frame_rate
    with torch.inference_mode():
        latent = vae.encode(audio)

        def stream_decode() -> None:
            state = vae.init_state(1)
            for start in range(0, frames, args.chunk_frames):
                vae.decode(latent[:, start : start + args.chunk_frames], state)

        def stream_encode() -> None:
            state = vae.init_state(1)
            for start in range(0, audio.shape[-1], vae.frame_size):
                vae.encode(audio[..., start : start + vae.frame_size], state)

        rows = {
            "encode, full pass": timed(lambda: vae.encode(audio), args.repeats),
            "encode, streaming 80 ms chunks": timed(stream_encode, args.repeats),
            "decode, full pass": timed(lambda: vae.decode(latent), args.repeats),
            f"decode, streaming {args.chunk_frames} frame(s) per call": timed(stream_decode, args.repeats),
        }
    params = sum(p.numel() for p in vae.parameters()) / 1e6
    print(f"AudioVAE {params:.1f}M params, {duration:.1f} s of audio, {args.threads} threads")
    print(f"{'path':<42} {'seconds':>8} {'RTF':>7}")
    for name, seconds in rows.items():
        print(f"{name:<42} {seconds:8.3f} {seconds / duration:7.3f}")


if __name__ == "__main__":
    main()
