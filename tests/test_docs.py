"""The documentation's invariants: a short README, links that resolve inside the repository, and
no text that points outside it or narrates how the code came to be."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.support import ROOT

README_MAX_LINES = 220
# Folders that hold no tracked text: local data, runs, environments and caches.
UNTRACKED_TOP = {".git", ".venv", "data", "logs", "outputs", "checkpoints", "wandb"}
UNTRACKED_ANYWHERE = {"__pycache__", ".pytest_cache", ".ruff_cache"}
TEXT_SUFFIXES = {".md", ".py", ".sh", ".yaml", ".yml", ".toml", ".cff", ".sbatch", ".txt"}
HISTORY_SUFFIXES = {".md", ".py", ".sh", ".yaml", ".yml", ".sbatch"}

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)
# Notes kept beside the repository, not in it.
OUTSIDE_NOTES = re.compile(
    r"\.\./shared|\breference/\w+\.md|\b(pocket_tts|peers|vae_calibration|pocket_speed)\.md"
)
HISTORY = re.compile(r"\bsessions? ?\d+", re.I)


def _text_files() -> list[Path]:
    """Every text file of the source tree, walked without descending into data, runs or caches."""
    files = []
    for folder, subfolders, names in os.walk(ROOT):
        here = Path(folder)
        subfolders[:] = [
            name
            for name in subfolders
            if name not in UNTRACKED_ANYWHERE
            and not name.endswith(".egg-info")
            and not (here == ROOT and name in UNTRACKED_TOP)
        ]
        files += [here / name for name in names if Path(name).suffix in TEXT_SUFFIXES]
    return sorted(files)


def _documents() -> list[Path]:
    docs = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
    return docs + sorted((ROOT / "recipes").rglob("README.md"))


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: markup dropped, lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    anchors = set()
    for heading in HEADING.findall(FENCE.sub("", path.read_text(encoding="utf-8"))):
        slug = _slug(heading)
        anchors.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
        seen[slug] = seen.get(slug, 0) + 1
    return anchors


def _links(path: Path) -> list[str]:
    return LINK.findall(FENCE.sub("", path.read_text(encoding="utf-8")))


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail into docs/"


def test_every_topic_has_a_page():
    pages = {p.stem for p in (ROOT / "docs").glob("*.md")}
    topics = {"data", "vae", "teacher", "distillation", "inference", "evaluation", "benchmarks",
              "recipes", "configuration", "testing", "architecture", "results"}  # fmt: skip
    assert topics <= pages, f"docs/ lacks {sorted(topics - pages)}"


@pytest.mark.parametrize("document", _documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_links_resolve_inside_the_repository(document: Path):
    broken = []
    for target in _links(document):
        file_part, _, anchor = target.partition("#")
        if re.match(r"[a-z][a-z0-9+.-]*:", file_part) or file_part.startswith("/"):
            broken.append(f"{target}: points outside the repository")
            continue
        resolved = (document.parent / file_part).resolve() if file_part else document
        if not resolved.is_relative_to(ROOT) or not resolved.exists():
            broken.append(f"{target}: no such file in the repository")
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            broken.append(f"{target}: no heading '#{anchor}' in {resolved.relative_to(ROOT)}")
    assert not broken, f"{document.relative_to(ROOT)}: " + "; ".join(broken)


def test_no_text_points_outside_the_repository():
    hits = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in _text_files()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if OUTSIDE_NOTES.search(line) and path != Path(__file__).resolve()
    ]
    assert not hits, f"references to notes outside the repository: {hits}"


def test_no_development_history():
    hits = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in _text_files()
        if path.suffix in HISTORY_SUFFIXES and path != Path(__file__).resolve()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if HISTORY.search(line)
    ]
    assert not hits, f"development history ('session N') in the tree: {hits}"


def test_the_checks_catch_what_they_guard(tmp_path: Path):
    """The patterns themselves: a broken link, an outside note and a session number are found."""
    page = tmp_path / "page.md"
    page.write_text(
        "# A title\n\n[ok](#a-title) [bad](missing.md) [web](https://example.org)\n```\n[x](y)\n```\n"
    )
    assert _links(page) == ["#a-title", "missing.md", "https://example.org"]
    assert _anchors(page) == {"a-title"}
    outside = "see ../" + "shared/DESIGN.md"  # built, so that no such path stands in the tree
    assert OUTSIDE_NOTES.search(outside) and OUTSIDE_NOTES.search("(reference/peers.md §d)")
    assert HISTORY.search("shipped in Session 12") and not HISTORY.search('scope="session"')
