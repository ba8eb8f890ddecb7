"""Text normalisation shared by corpus preparation, training and inference, and the tokenizer that
applies it (SentencePiece training on manifests; loading of a SentencePiece ``.model`` or a HF
``tokenizers`` ``tokenizer.json``; encode/decode)."""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import tempfile
import unicodedata
from collections.abc import Sequence
from pathlib import Path

from pockettts.io import atomic_write

_WHITESPACE = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Unicode NFC, typographic quotes and dashes made plain, whitespace collapsed."""
    text = unicodedata.normalize("NFC", text)
    text = text.translate(_PLAIN_PUNCTUATION)
    return _WHITESPACE.sub(" ", text).strip()


def is_speakable(text: str) -> bool:
    """Whether ``text`` has anything to say: at least one letter or digit in any script."""
    return any(ch.isalnum() for ch in text)


# Typographic characters -> their plain forms (a Pocket TTS config's ``replace_characters``).
PLAIN_PUNCTUATION = {
    "\u2018": "'",
    "\u2019": "'",
    "\u201c": '"',
    "\u201d": '"',
    "\u2013": "-",
    "\u2014": "-",
    "\u00a0": " ",
    "\u2026": "...",
}
_PLAIN_PUNCTUATION = str.maketrans(PLAIN_PUNCTUATION)


# -- SentencePiece tokenizer -------------------------------------------------------------------

MODEL_TYPES = ("bpe", "unigram", "char", "word")
# SentencePiece's own rejection of a vocabulary the corpus cannot fill.
_VOCAB_TOO_HIGH = re.compile(r"Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)")
# SentencePiece's word-boundary marker; a piece that is only this marker carries no text.
_WORD_BOUNDARY = "\u2581"


class TextError(ValueError):
    """Text that cannot be spoken or tokenized; the message quotes the text."""


class VocabularyTooLargeError(ValueError):
    """The corpus has too few distinct pieces for the requested vocabulary size."""

    def __init__(self, requested: int, maximum: int, sentences: int):
        self.requested, self.maximum = requested, maximum
        super().__init__(
            f"vocab_size {requested} is too large for this corpus ({sentences} sentences): SentencePiece "
            f"can build at most {maximum} pieces from it. Use vocab_size <= {maximum}, a larger corpus, "
            "or hard_vocab_limit=False (--soft-vocab-limit) to stop where the corpus runs out."
        )


def _manifest_texts(manifests: Sequence[str | os.PathLike]) -> list[str]:
    from pockettts.data.manifest import read_manifest  # data imports text, not the other way round

    texts = []
    for manifest in manifests:
        texts.extend(t for t in (normalize_text(i.text) for i in read_manifest(manifest)) if t)
    return texts


def train_tokenizer(
    manifests: Sequence[str | os.PathLike],
    out_prefix: str | os.PathLike,
    vocab_size: int = 4000,
    model_type: str = "bpe",
    character_coverage: float = 1.0,
    seed: int = 0,
    hard_vocab_limit: bool = True,
    max_sentences: int | None = None,
    num_threads: int | None = None,
) -> Path:
    """Train a SentencePiece model on the normalised transcripts of ``manifests``.

    Writes ``<out_prefix>.model`` and ``<out_prefix>.vocab``; both appear only once complete (trained
    in a scratch directory, then each written atomically, ``.model`` last). Pocket TTS uses BPE,
    4000 pieces and character coverage 1.0 (0.9995 for CJK scripts).

    Args:
        hard_vocab_limit: when True (the default) a corpus too small for ``vocab_size`` raises
            :class:`VocabularyTooLargeError` naming the largest size that works; when False the
            vocabulary silently stops at what the corpus supports (check ``Tokenizer.vocab_size``).
        max_sentences: train on a seeded random sample of this many transcripts (large corpora).
        num_threads: trainer threads (default: the machine's cores, at most 16).

    Returns:
        The path of the ``.model`` file.
    """
    import sentencepiece as spm

    if model_type not in MODEL_TYPES:
        raise ValueError(f"model_type must be one of {MODEL_TYPES}, got {model_type!r}")
    texts = _manifest_texts(manifests)
    if not texts:
        raise TextError(f"no usable transcripts in {[str(m) for m in manifests]}")
    out_prefix = Path(out_prefix)
    spm.set_random_generator_seed(seed)
    # The trainer writes both files under a prefix of its own: train in scratch, then publish.
    with tempfile.TemporaryDirectory() as scratch:
        tmp_prefix = Path(scratch) / out_prefix.name
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(texts),
                model_prefix=str(tmp_prefix),
                vocab_size=vocab_size,
                model_type=model_type,
                character_coverage=character_coverage,
                hard_vocab_limit=hard_vocab_limit,
                input_sentence_size=max_sentences or 0,
                shuffle_input_sentence=True,
                num_threads=num_threads or min(os.cpu_count() or 1, 16),
                minloglevel=2,
            )
        except RuntimeError as err:
            match = _VOCAB_TOO_HIGH.search(str(err))
            if match:
                raise VocabularyTooLargeError(vocab_size, int(match.group(2)), len(texts)) from err
            raise
        for suffix in (".vocab", ".model"):
            atomic_write(f"{out_prefix}{suffix}", functools.partial(shutil.copyfile, f"{tmp_prefix}{suffix}"))
    return Path(f"{out_prefix}.model")


class _SentencePieceFile:
    """A SentencePiece ``.model`` (serialized protobuf), read as Pocket TTS's ``SentencePieceTokenizer``."""

    def __init__(self, data: bytes):
        import sentencepiece as spm

        self._sp = spm.SentencePieceProcessor(model_proto=data)
        self.vocab_size = self._sp.vocab_size()
        self.unk_id = self._sp.unk_id()
        # Pieces that carry no text: unknown and the bare word boundary (unk_id again when absent).
        self.silent_ids = frozenset({self.unk_id, self._sp.piece_to_id(_WORD_BOUNDARY)})

    def encode(self, text: str) -> list[int]:
        return self._sp.encode(text, out_type=int)

    def decode(self, ids: list[int]) -> str:
        return self._sp.decode(ids)


class _TokenizersJsonFile:
    """A HF ``tokenizers`` ``tokenizer.json`` (the format of the released Pocket TTS models, converted
    from their SentencePiece models), read as Pocket TTS's ``JsonTokenizer``: ``encode(text).ids`` with
    the file's own post-processing, ``decode`` skipping special tokens."""

    def __init__(self, data: bytes):
        import tokenizers

        text = data.decode("utf-8")
        self._tok = tokenizers.Tokenizer.from_str(text)
        self.vocab_size = self._tok.get_vocab_size()
        model = json.loads(text)["model"]
        # BPE / WordPiece / WordLevel name their unknown token, Unigram gives its id.
        unk = model.get("unk_token")
        self.unk_id = self._tok.token_to_id(unk) if unk is not None else model.get("unk_id")
        specials = {i for i, added in self._tok.get_added_tokens_decoder().items() if added.special}
        boundary = self._tok.token_to_id(_WORD_BOUNDARY)
        self.silent_ids = frozenset(specials | {i for i in (self.unk_id, boundary) if i is not None})

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text).ids

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids)


def _read_tokenizer_file(path: Path, data: bytes) -> _SentencePieceFile | _TokenizersJsonFile:
    """By content, not name: a JSON object is a ``tokenizer.json``, anything else must be a ``.model``."""
    is_json = data.lstrip()[:1] == b"{"
    try:
        return _TokenizersJsonFile(data) if is_json else _SentencePieceFile(data)
    except Exception as err:  # sentencepiece/tokenizers raise bare RuntimeError/Exception on bad files
        kind = "tokenizers tokenizer.json" if is_json else "SentencePiece .model"
        raise ValueError(
            f"{path} is not a readable tokenizer (tried it as a {kind}; a SentencePiece .model or a "
            f"tokenizers tokenizer.json is expected): {err}"
        ) from err


class Tokenizer:
    """A trained tokenizer applied after :func:`normalize_text`: a SentencePiece ``.model`` or a HF
    ``tokenizers`` ``tokenizer.json`` (what released Pocket TTS models ship); ids are those of
    Pocket TTS's tokenizer class for the same file and the normalised text.

    Ids run over ``[0, vocab_size)``; ``pad_id == vocab_size`` is the extra, never-predicted row
    of the text embedding (``nn.Embedding(vocab_size + 1, d)``, as in Pocket TTS). Pickles by
    value, so DataLoader workers need not see the file.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"tokenizer model not found: {self.path}")
        self._load(self.path.read_bytes())

    def _load(self, data: bytes) -> None:
        self._data = data
        self._file = _read_tokenizer_file(self.path, data)

    def __getstate__(self) -> dict:
        return {"path": self.path, "data": self._data}

    def __setstate__(self, state: dict) -> None:
        self.path = state["path"]
        self._load(state["data"])

    @property
    def vocab_size(self) -> int:
        return self._file.vocab_size

    @property
    def pad_id(self) -> int:
        return self.vocab_size

    @property
    def unk_id(self) -> int | None:
        """The unknown piece's id (None for a ``tokenizer.json`` without one)."""
        return self._file.unk_id

    def encode(self, text: str) -> list[int]:
        """Normalise and tokenize; raises :class:`TextError` when nothing speakable is left."""
        normalized = normalize_text(text)
        if not is_speakable(normalized):
            raise TextError(f"nothing to say in text {text!r}")
        ids = self._file.encode(normalized)
        # Only unknowns, bare word boundaries or special tokens: the tokenizer knows none of the text.
        if all(i in self._file.silent_ids for i in ids):
            raise TextError(f"text {text!r} has no characters this tokenizer knows ({self.path})")
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """Ids back to text; padding ids are dropped so padded rows decode as-is."""
        ids = [int(i) for i in ids if int(i) != self.pad_id]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"token ids {bad[:5]} are outside [0, {self.vocab_size}) of {self.path}")
        return self._file.decode(ids)

    def __repr__(self) -> str:
        return f"Tokenizer({str(self.path)!r}, vocab_size={self.vocab_size})"
