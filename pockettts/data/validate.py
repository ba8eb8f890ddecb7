"""Manifest validation: check every item, report each problem by id, keep every good item.

Errors drop an item from the clean manifest; warnings keep it (a stereo 44.1 kHz file is fine, it
is downmixed and resampled on load, but the report says so). Validation never stops at the first
bad item.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from tqdm import tqdm

from pockettts.audio import SAMPLE_RATE, AudioError, audio_info, is_silent, read_audio
from pockettts.data.manifest import (
    ManifestError,
    ManifestItem,
    iter_manifest_lines,
    write_manifest,
)
from pockettts.text import is_speakable, normalize_text

# Problem codes. Errors drop the item; warnings keep it.
ERRORS = (
    "malformed_line",
    "duplicate_id",
    "missing_file",
    "unreadable_audio",
    "window_out_of_range",
    "silent_audio",
    "too_short",
    "too_long",
    "empty_text",
    "bad_alignment",
)
WARNINGS = ("resampled", "downmixed")


@dataclass
class ValidationConfig:
    """Thresholds for keeping an item."""

    min_duration: float = 0.5
    max_duration: float = 30.0
    silence_db: float = -50.0
    sample_rate: int = SAMPLE_RATE
    alignment_tolerance: float = 0.05


@dataclass(frozen=True)
class Problem:
    code: str
    message: str
    id: str | None = None
    line: int | None = None

    @property
    def is_error(self) -> bool:
        return self.code in ERRORS


@dataclass
class ValidationReport:
    total: int = 0
    kept: int = 0
    kept_hours: float = 0.0
    problems: list[Problem] = field(default_factory=list)

    @property
    def dropped(self) -> int:
        return self.total - self.kept

    def counts(self) -> dict[str, int]:
        return dict(Counter(p.code for p in self.problems))

    def to_json(self) -> dict:
        return {
            "total": self.total,
            "kept": self.kept,
            "dropped": self.dropped,
            "kept_hours": round(self.kept_hours, 4),
            "counts": self.counts(),
            "problems": [asdict(p) for p in self.problems],
        }

    def summary(self) -> str:
        lines = [f"{self.kept}/{self.total} items kept ({self.kept_hours:.2f} h), {self.dropped} dropped"]
        for code, n in sorted(self.counts().items()):
            kind = "error" if code in ERRORS else "warning"
            lines.append(f"  {code:<20} {n:>7}  ({kind})")
        return "\n".join(lines)


def check_item(
    item: ManifestItem, root: Path | None, config: ValidationConfig
) -> tuple[ManifestItem | None, list[Problem]]:
    """Check one item; return the cleaned item (``None`` if dropped) and its problems."""
    problems: list[Problem] = []

    def problem(code: str, message: str) -> None:
        problems.append(Problem(code, message, id=item.id))

    text = normalize_text(item.text)
    if not is_speakable(text):
        problem("empty_text", f"{item.id}: transcript {item.text!r} has nothing to speak")

    path = item.resolve_audio(root)
    if not path.is_file():
        problem("missing_file", f"{item.id}: audio file not found: {path}")
        return None, problems
    try:
        info = audio_info(path)
    except AudioError as err:
        problem("unreadable_audio", f"{item.id}: {err}")
        return None, problems
    window = item.duration if item.duration is not None else info.duration - item.offset
    if item.offset < 0 or window <= 0 or item.offset + window > info.duration + 1e-3:
        problem(
            "window_out_of_range",
            f"{item.id}: window {item.offset:.3f}s+{window:.3f}s lies outside {path} "
            f"({info.duration:.3f}s long)",
        )
        return None, problems
    try:
        wav, rate = read_audio(path, item.offset, item.duration)
    except AudioError as err:
        problem("unreadable_audio", f"{item.id}: {err}")
        return None, problems
    duration = wav.shape[-1] / rate

    if duration < config.min_duration:
        problem("too_short", f"{item.id}: {duration:.3f}s is shorter than {config.min_duration}s")
    if duration > config.max_duration:
        problem("too_long", f"{item.id}: {duration:.3f}s is longer than {config.max_duration}s")
    if is_silent(wav, rate, config.silence_db):
        problem("silent_audio", f"{item.id}: no frame louder than {config.silence_db} dBFS in {path}")
    for kind, spans in (("segment", item.segments), ("word", item.words)):
        for span in spans:
            if not (0 <= span.start <= span.end <= duration + config.alignment_tolerance):
                problem(
                    "bad_alignment",
                    f"{item.id}: {kind} {span.text!r} at {span.start:.3f}-{span.end:.3f}s "
                    f"does not fit in {duration:.3f}s",
                )
                break
    if any(p.is_error for p in problems):
        return None, problems
    # Warnings only for kept items: they describe what loading will do to them.
    if rate != config.sample_rate:
        problem("resampled", f"{item.id}: {rate} Hz, resampled to {config.sample_rate} Hz on load")
    if info.channels > 1:
        problem("downmixed", f"{item.id}: {info.channels} channels, downmixed to mono on load")
    return replace(item, text=text, duration=round(duration, 4)), problems


def validate_items(
    entries: Iterable[tuple[int, ManifestItem | ManifestError]],
    root: Path | None,
    config: ValidationConfig | None = None,
    workers: int = 2,
    progress: bool = True,
) -> tuple[list[ManifestItem], ValidationReport]:
    """Validate ``(line, item_or_error)`` entries; return the clean items (input order) and report."""
    config = config or ValidationConfig()
    report = ValidationReport()
    seen: set[str] = set()
    to_check: list[ManifestItem] = []
    for line, entry in entries:
        report.total += 1
        if isinstance(entry, ManifestError):
            report.problems.append(Problem("malformed_line", str(entry), line=line))
        elif entry.id in seen:
            report.problems.append(
                Problem("duplicate_id", f"{entry.id}: duplicate id (line {line}); first kept", entry.id, line)
            )
        else:
            seen.add(entry.id)
            to_check.append(entry)

    kept: list[ManifestItem] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = pool.map(lambda item: check_item(item, root, config), to_check)
        for clean, problems in tqdm(results, total=len(to_check), desc="validate", disable=not progress):
            report.problems.extend(problems)
            if clean is not None:
                kept.append(clean)
                report.kept_hours += clean.duration / 3600
    report.kept = len(kept)
    return kept, report


def _relocate(item: ManifestItem, src_root: Path, dst_root: Path) -> ManifestItem:
    """Rewrite a relative audio path so it stays valid from the output manifest's directory."""
    if Path(item.audio).is_absolute():
        return item
    absolute = (src_root / item.audio).resolve()
    return replace(item, audio=os.path.relpath(absolute, dst_root.resolve()))


def validate_manifest(
    manifest: str | os.PathLike,
    output: str | os.PathLike,
    report_path: str | os.PathLike | None = None,
    config: ValidationConfig | None = None,
    workers: int = 2,
    progress: bool = True,
) -> ValidationReport:
    """Validate ``manifest`` and write the clean manifest to ``output`` plus a JSON report.

    The report (default: ``<output>.report.json``) lists every problem with its item id or line.
    """
    manifest, output = Path(manifest), Path(output)
    if not manifest.is_file():
        raise FileNotFoundError(f"manifest not found: {manifest}")
    root = manifest.parent
    kept, report = validate_items(iter_manifest_lines(manifest), root, config, workers, progress)
    write_manifest(output, (_relocate(item, root, output.parent) for item in kept))
    report_path = Path(report_path) if report_path else output.with_suffix(".report.json")
    payload = {"input": str(manifest), "output": str(output), **report.to_json()}
    report_path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    return report
