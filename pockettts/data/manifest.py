"""The manifest: one jsonl schema that every corpus is turned into and every stage reads.

One line per utterance::

    {"id": "spk1_0001", "audio": "audio/spk1_0001.wav", "text": "Hello there. How are you?",
     "speaker": "spk1", "language": "en", "offset": 0.0, "duration": 2.84,
     "segments": [{"text": "Hello there.", "start": 0.05, "end": 1.02}, ...],
     "words": [{"word": "Hello", "start": 0.05, "end": 0.41}, ...]}

``audio`` is absolute or relative to the manifest's directory. ``offset``/``duration`` select a
window of a longer file (seconds); all times in ``segments`` and ``words`` are relative to the
window start. ``segments`` are sentence-level boundaries (exact for the synthetic demo corpus),
``words`` are word alignments (optional).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from pockettts.io import atomic_write


class ManifestError(ValueError):
    """A manifest line that does not follow the schema; the message names file and line."""


@dataclass(frozen=True)
class TimedSpan:
    """A piece of the transcript with its time span in seconds (relative to the item start)."""

    text: str
    start: float
    end: float


@dataclass(frozen=True)
class ManifestItem:
    id: str
    audio: str
    text: str
    speaker: str = "unknown"
    language: str = "en"
    offset: float = 0.0
    duration: float | None = None
    segments: tuple[TimedSpan, ...] = field(default=())
    words: tuple[TimedSpan, ...] = field(default=())

    def resolve_audio(self, root: str | os.PathLike | None) -> Path:
        """Absolute path of the audio file (relative paths are relative to ``root``)."""
        path = Path(self.audio)
        return path if path.is_absolute() or root is None else Path(root) / path

    def to_json(self) -> dict:
        record = asdict(self)
        record["segments"] = [_span_json(s, "text") for s in self.segments]
        record["words"] = [_span_json(w, "word") for w in self.words]
        # Optional fields are left out when empty so manifests stay readable.
        for key in ("segments", "words"):
            if not record[key]:
                del record[key]
        if record["duration"] is None:
            del record["duration"]
        return record

    @classmethod
    def from_json(cls, record: dict) -> ManifestItem:
        """Build an item from one parsed line; raises ``ManifestError`` on schema violations."""
        if not isinstance(record, dict):
            raise ManifestError(f"expected a JSON object, got {type(record).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(record) - known)
        if unknown:
            raise ManifestError(f"unknown field(s) {unknown}; allowed: {sorted(known)}")
        for key in ("id", "audio", "text"):
            if key not in record:
                raise ManifestError(f"missing required field {key!r}")
        values = dict(record)
        for key in ("id", "audio", "text", "speaker", "language"):
            if key in values and not isinstance(values[key], str):
                raise ManifestError(f"field {key!r} must be a string, got {values[key]!r}")
        for key in ("offset", "duration"):
            if values.get(key) is not None:
                values[key] = _number(values[key], key)
        values["segments"] = tuple(_span(s, "text") for s in values.get("segments", ()))
        values["words"] = tuple(_span(w, "word") for w in values.get("words", ()))
        return cls(**values)


def _number(value, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ManifestError(f"field {key!r} must be a number, got {value!r}")
    return float(value)


def _span(record, text_key: str) -> TimedSpan:
    if not isinstance(record, dict) or not {text_key, "start", "end"} <= set(record):
        raise ManifestError(f"expected {{{text_key!r}, 'start', 'end'}}, got {record!r}")
    return TimedSpan(str(record[text_key]), _number(record["start"], "start"), _number(record["end"], "end"))


def _span_json(span: TimedSpan, text_key: str) -> dict:
    return {text_key: span.text, "start": round(span.start, 4), "end": round(span.end, 4)}


def iter_manifest_lines(path: str | os.PathLike) -> Iterator[tuple[int, ManifestItem | ManifestError]]:
    """Yield ``(line_number, item_or_error)`` for every non-blank line, never stopping early."""
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield number, ManifestItem.from_json(json.loads(line))
            except (json.JSONDecodeError, ManifestError, TypeError) as err:
                yield number, ManifestError(f"{path}:{number}: {err}")


def read_manifest(path: str | os.PathLike) -> list[ManifestItem]:
    """Read a manifest, raising ``ManifestError`` (with file and line) on the first bad line."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    items = []
    for _, entry in iter_manifest_lines(path):
        if isinstance(entry, ManifestError):
            raise entry
        items.append(entry)
    return items


def write_manifest(path: str | os.PathLike, items: Iterable[ManifestItem]) -> Path:
    """Write items as jsonl atomically: the file is replaced only once it is complete."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as handle:
            for item in items:
                handle.write(json.dumps(item.to_json(), ensure_ascii=False) + "\n")

    return atomic_write(path, write)


def _drop_torn_tail(path: Path) -> None:
    """Cut a partial last line (from a crash mid-write) so appends start on a fresh line."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as handle:
        data = handle.read()
        if not data.endswith(b"\n"):
            handle.truncate(data.rfind(b"\n") + 1)


class ManifestAppender:
    """Appends items to a manifest one line at a time, flushed, for resumable preparation.

    A crash loses at most the line being written; :func:`iter_manifest_lines` reports a torn
    last line as an error instead of failing the whole file.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _drop_torn_tail(self.path)
        self._handle = open(self.path, "a", encoding="utf-8")

    def existing_ids(self) -> set[str]:
        return {entry.id for _, entry in iter_manifest_lines(self.path) if isinstance(entry, ManifestItem)}

    def append(self, item: ManifestItem) -> None:
        self._handle.write(json.dumps(item.to_json(), ensure_ascii=False) + "\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> ManifestAppender:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
