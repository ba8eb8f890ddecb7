"""A small copy of a report with a few items of every run in Opus, to keep in a repository or send.

    pockettts-tools listening-copy logs/ablation_demo/report/teachers --out docs/ablation/teachers --items 4

From a folder written by ``pockettts-tools report``: its tables, CSVs and plots, the same ``--items``
items of each run (spread over the items every run has) with their generations, prompts and references
as Opus files, each run's listening page and the sweep page linking them (``pockettts.eval.listening_copy``).
"""

from __future__ import annotations

import argparse
import sys

from pockettts.eval.listening_copy import ListeningCopyError, write_listening_copy


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("report", help="a folder written by pockettts-tools report")
    parser.add_argument("--out", required=True, help="the copy's folder")
    parser.add_argument("--items", type=int, default=4, help="items kept per run (default 4)")


def run(args: argparse.Namespace) -> int:
    if args.items < 1:
        print("error: --items must be at least 1", file=sys.stderr)
        return 2
    try:
        page = write_listening_copy(args.report, args.out, args.items)
    except ListeningCopyError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{page} (open it from disk)")
    return 0
