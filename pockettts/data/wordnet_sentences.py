"""A larger sentence list for the demo corpus: WordNet 3.0's usage examples.

The bundled CC0 list has 720 sentences, too few distinct texts for a small teacher to learn to read
new ones (it memorises sentence -> audio pairs instead). WordNet's glosses carry ~48k quoted usage
examples ("he ran flat out to catch the bus"), free to redistribute with Princeton's notice
(``wordnet_sentences_LICENSE.txt``). Debian ships them in ``wordnet-base``; this module turns its
``data.*`` files into a one-sentence-per-line list for ``python -m pockettts.data demo --sentences``
(command line: ``pockettts-tools wordnet-sentences``).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable
from pathlib import Path

WORDNET_DATA_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")
WORDNET_SENTENCES = Path(__file__).with_suffix(".txt")  # the shipped list (pockettts-tools wordnet-sentences)
# Plain words and simple punctuation only: no digits, quotes, ellipses or dashes the voices misread.
_READABLE = re.compile(r"[A-Za-z][A-Za-z ,'\-]*[A-Za-z][.?!]?")
_QUOTED = re.compile(r'"([^"]+)"')


def usage_examples(lines: Iterable[str]) -> list[str]:
    """The quoted usage examples of WordNet ``data.*`` lines (licence header lines are skipped)."""
    examples = []
    for line in lines:
        if line.startswith("  ") or "|" not in line:  # the licence header is indented
            continue
        gloss = line.split("|", 1)[1]
        examples.extend(match.strip() for match in _QUOTED.findall(gloss))
    return examples


def as_sentence(example: str, min_words: int, max_words: int) -> str | None:
    """``example`` as a capitalised sentence with final punctuation, or None if unsuitable."""
    text = example.strip().rstrip(";").strip()
    if not _READABLE.fullmatch(text) or "--" in text or "''" in text:
        return None
    if not min_words <= len(text.split()) <= max_words:
        return None
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".?!" else text + "."


def wordnet_sentences(
    wordnet_dir: Path, min_words: int = 6, max_words: int = 14, limit: int | None = None, seed: int = 0
) -> list[str]:
    """Distinct readable usage examples from a WordNet dictionary folder, seeded order."""
    missing = [name for name in WORDNET_DATA_FILES if not (wordnet_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{wordnet_dir} lacks WordNet data files {missing}")
    # Keyed case-insensitively: examples that differ only in the capital we add are one sentence.
    sentences: dict[str, str] = {}
    for name in WORDNET_DATA_FILES:
        lines = (wordnet_dir / name).read_text(encoding="latin-1").splitlines()
        for example in usage_examples(lines):
            sentence = as_sentence(example, min_words, max_words)
            if sentence is not None:
                sentences.setdefault(sentence.lower(), sentence)
    ordered = list(sentences.values())
    random.Random(seed).shuffle(ordered)
    return ordered[:limit]
