"""WordNet 3.0's usage examples as a one-sentence-per-line list for the demo corpus.

    apt-get download wordnet-base && dpkg-deb -x wordnet-base_*.deb wn
    pockettts-tools wordnet-sentences --wordnet wn/usr/share/wordnet \
        --out pockettts/data/wordnet_sentences.txt

Distinct readable examples of ``--min-words`` to ``--max-words`` words, in a seeded order
(``pockettts.data.wordnet_sentences``); the list feeds ``python -m pockettts.data demo --sentences``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pockettts.data.wordnet_sentences import wordnet_sentences
from pockettts.io import atomic_write_text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--wordnet", type=Path, required=True, help="folder with WordNet's data.* files")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--min-words", type=int, default=6)
    parser.add_argument("--max-words", type=int, default=14)
    parser.add_argument("--limit", type=int, default=None)


def run(args: argparse.Namespace) -> int:
    sentences = wordnet_sentences(args.wordnet, args.min_words, args.max_words, args.limit)
    atomic_write_text(args.out, "\n".join(sentences) + "\n")
    print(f"{len(sentences)} sentences -> {args.out}")
    return 0
