"""Word and character error rates of transcripts against reference texts, after a named normaliser.

Two normalisers, whose numbers must never be compared with each other:
``"whisper"`` is openai-whisper's ``EnglishTextNormalizer`` (spelling, numbers, contractions);
``"plain"`` lowercases and deletes punctuation, apostrophes included (the F5-TTS rule).
"""

from __future__ import annotations

import functools
import string
import unicodedata
from collections.abc import Callable, Sequence

from pockettts.extras import import_eval_module

_ASCII_PUNCTUATION = set(string.punctuation)


def plain_normalize(text: str) -> str:
    """Lowercase, delete punctuation (ASCII ``string.punctuation`` and Unicode P*), collapse spaces."""
    kept = (c for c in text if c not in _ASCII_PUNCTUATION and not unicodedata.category(c).startswith("P"))
    return " ".join("".join(kept).lower().split())


@functools.cache
def _whisper_normalizer() -> Callable[[str], str]:
    return import_eval_module("whisper.normalizers").EnglishTextNormalizer()


def get_normalizer(name: str) -> Callable[[str], str]:
    """The text normaliser called ``name`` (``"whisper"`` or ``"plain"``)."""
    if name == "whisper":
        return _whisper_normalizer()
    if name == "plain":
        return plain_normalize
    raise ValueError(f"unknown normalizer {name!r}; choose 'whisper' or 'plain'")


def _normalized_pairs(
    references: Sequence[str], hypotheses: Sequence[str], normalizer: str
) -> tuple[list[str], list[str]]:
    """Normalise both sides, rejecting mismatched lists and references that normalise to nothing."""
    if isinstance(references, str) or isinstance(hypotheses, str):
        raise TypeError("pass lists of texts, not single strings")
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    if not references:
        raise ValueError("no utterances to score")
    norm = get_normalizer(normalizer)
    refs, hyps = [norm(r) for r in references], [norm(h) for h in hypotheses]
    for i, (raw, ref) in enumerate(zip(references, refs)):
        if not ref.split():
            # error rates are undefined without a reference; this is a test-set bug, not a model error
            raise ValueError(f"reference {i} ({raw!r}) is empty after {normalizer!r} normalisation")
    return refs, hyps


def _error_rate(
    references: Sequence[str], hypotheses: Sequence[str], normalizer: str, unit: str
) -> dict[str, object]:
    refs, hyps = _normalized_pairs(references, hypotheses, normalizer)
    jiwer = import_eval_module("jiwer")
    process, rate = (jiwer.process_words, "wer") if unit == "words" else (jiwer.process_characters, "cer")
    per_utt = [getattr(process(r, h), rate) for r, h in zip(refs, hyps)]
    total = process(refs, hyps)
    return {
        "normalizer": normalizer,
        rate: getattr(total, rate),
        f"mean_utterance_{rate}": sum(per_utt) / len(per_utt),
        f"utterance_{rate}": per_utt,
        "substitutions": total.substitutions,
        "deletions": total.deletions,
        "insertions": total.insertions,
        "hits": total.hits,
        f"reference_{unit}": total.hits + total.substitutions + total.deletions,
    }


def word_error_rate(
    references: Sequence[str], hypotheses: Sequence[str], normalizer: str = "whisper"
) -> dict[str, object]:
    """Corpus and per-utterance WER of ``hypotheses`` against ``references`` (same length, same order).

    Returns ``wer`` (corpus level: all errors / all reference words), ``mean_utterance_wer`` (the mean of
    ``utterance_wer``, the F5 / seed-tts-eval aggregate), the ``substitutions``, ``deletions``,
    ``insertions``, ``hits`` and ``reference_words`` counts, and the ``normalizer`` name.
    """
    return _error_rate(references, hypotheses, normalizer, "words")


def character_error_rate(
    references: Sequence[str], hypotheses: Sequence[str], normalizer: str = "whisper"
) -> dict[str, object]:
    """Corpus and per-utterance CER, the character-level twin of :func:`word_error_rate`.

    Characters of the normalised texts are aligned, single spaces between words included (jiwer's
    ``process_characters``). Returns ``cer``, ``mean_utterance_cer``, ``utterance_cer``, the
    ``substitutions``, ``deletions``, ``insertions``, ``hits`` and ``reference_chars`` counts, and the
    ``normalizer`` name.
    """
    return _error_rate(references, hypotheses, normalizer, "chars")


def utterance_scores(reference: str, hypothesis: str, normalizers: Sequence[str]) -> dict[str, dict]:
    """One utterance's scores as an item's row keeps them: ``wer`` and ``cer``, and the counts behind
    them, ``word_errors`` / ``reference_words`` and ``char_errors`` / ``reference_chars`` (errors are
    substitutions + deletions + insertions), each ``{normaliser: value}``. The corpus rate of any set
    of utterances is the sum of their errors over the sum of their reference lengths."""
    keys = ("wer", "cer", "word_errors", "reference_words", "char_errors", "reference_chars")
    scores: dict[str, dict] = {key: {} for key in keys}
    for name in normalizers:
        words = word_error_rate([reference], [hypothesis], name)
        chars = character_error_rate([reference], [hypothesis], name)
        scores["wer"][name], scores["cer"][name] = words["wer"], chars["cer"]
        scores["word_errors"][name] = words["substitutions"] + words["deletions"] + words["insertions"]
        scores["char_errors"][name] = chars["substitutions"] + chars["deletions"] + chars["insertions"]
        scores["reference_words"][name] = words["reference_words"]
        scores["reference_chars"][name] = chars["reference_chars"]
    return scores
