"""Text normalisation shared by corpus preparation, training and inference."""

from __future__ import annotations

import re
import unicodedata

_WHITESPACE = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Unicode NFC, typographic quotes and dashes made plain, whitespace collapsed."""
    text = unicodedata.normalize("NFC", text)
    text = text.translate(_PLAIN_PUNCTUATION)
    return _WHITESPACE.sub(" ", text).strip()


def is_speakable(text: str) -> bool:
    """Whether ``text`` has anything to say: at least one letter or digit in any script."""
    return any(ch.isalnum() for ch in text)


_PLAIN_PUNCTUATION = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u2013": "-",
        "\u2014": "-",
        "\u00a0": " ",
        "\u2026": "...",
    }
)
