"""Command-line options that several sub-commands share."""

from __future__ import annotations

import argparse


def add_loop_guard_argument(parser: argparse.ArgumentParser) -> None:
    """``--loop-guard`` (``WhisperASR(loop_guard=...)``)."""
    parser.add_argument(
        "--loop-guard", action="store_true",
        help="re-decode, seeded and hotter, where greedy Whisper repeats itself (whisper's fallback)",
    )  # fmt: skip


def add_cut_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of every report on validation cuts: the export, the manifest and its latent
    cache, the codec, and which items."""
    parser.add_argument("--teacher", required=True, help="an exported FlowLM")
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--cache", required=True, help="latent cache root of the manifest")
    parser.add_argument("--vae", default=None, help="default: the VAE recorded in the teacher export")
    parser.add_argument("--limit", type=int, default=None, help="first N items (see --spread)")
    parser.add_argument("--spread", action="store_true", help="the N items spread evenly over the manifest")
