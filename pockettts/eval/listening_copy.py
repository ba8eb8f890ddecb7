"""A small copy of a sweep report to keep in a repository or send: its tables, CSVs and plots, and the
same few items of every run with their audio in Opus, each run's listening page and the sweep page
linking them. Command line: ``pockettts-tools listening-copy REPORT_DIR --out OUT --items N``.

Layout of ``OUT``: the report's ``results.md``, ``results.csv`` (``results_dir`` pointing into
``runs/``), ``paired.csv`` and ``vs_*.png``; ``runs/<run>/`` with the run's ``results.json`` (numbers
of ALL its items), ``items.jsonl`` (the kept items) and ``report.html``; ``audio/`` with one Opus
file per generation, and the prompts and references once (every run shares them); ``report.html``.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path
from typing import Any

from pockettts.audio import read_audio, save_audio
from pockettts.eval.html_page import write_run_page, write_sweep_page
from pockettts.eval.runner import spread
from pockettts.io import atomic_write_text

REPORT_FILES = ("results.md", "paired.csv")


class ListeningCopyError(ValueError):
    """A report folder this cannot copy (no results.csv, runs without common items)."""


def _rows(run: Path) -> dict[str, dict[str, Any]]:
    """``items.jsonl`` rows of a run by id (the last row of an item redone)."""
    path = run / "items.jsonl"
    if not path.is_file():
        raise ListeningCopyError(f"{run}: no items.jsonl (not an evaluation results folder)")
    return {row["id"]: row for row in map(json.loads, path.read_text(encoding="utf-8").splitlines())}


def _opus(source: Path, target: Path) -> None:
    if not target.is_file():
        audio, rate = read_audio(source)
        save_audio(target, audio, rate)


def _relative(target: Path, start: Path) -> str:
    return Path(os.path.relpath(target, start)).as_posix()


def write_listening_copy(report_dir: str | Path, out: str | Path, items: int = 4) -> Path:
    """Copy ``report_dir`` (written by ``pockettts-tools report``) to ``out`` with ``items`` items per
    run, spread over the items every run has; returns ``out/report.html``."""
    report_dir, out = Path(report_dir), Path(out)
    if not (report_dir / "results.csv").is_file():
        raise ListeningCopyError(f"{report_dir}: no results.csv (write it with pockettts-tools report)")
    with (report_dir / "results.csv").open(newline="", encoding="utf-8") as handle:
        table = list(csv.DictReader(handle))
    runs = [Path(row["results_dir"]) for row in table]
    rows = {run: _rows(run) for run in runs}
    common = sorted(set.intersection(*(set(r) for r in rows.values())))
    common = [i for i in common if all(rows[run][i].get("wav") for run in runs)]  # audio in every run
    if not common:
        raise ListeningCopyError(f"{report_dir}: its runs have no item with audio in common")
    chosen = [common[i] for i in spread(len(common), items)]

    out.mkdir(parents=True, exist_ok=True)
    for name in REPORT_FILES:
        if (report_dir / name).is_file():
            shutil.copyfile(report_dir / name, out / name)
    for plot in report_dir.glob("vs_*.png"):
        shutil.copyfile(plot, out / plot.name)
    audio = out / "audio"
    for row, run in zip(table, runs):
        run_out = out / "runs" / run.name
        run_out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run / "results.json", run_out / "results.json")
        kept = []
        for item_id in chosen:
            row_out = dict(rows[run][item_id])
            # generations differ per run; prompts and references are the same files in every run
            for key, folder in (
                ("wav", run.name),
                ("kept_prompt", "prompts"),
                ("kept_reference", "references"),
            ):
                if row_out.get(key) and (run / row_out[key]).is_file():
                    target = audio / folder / f"{Path(row_out[key]).stem}.ogg"
                    target.parent.mkdir(parents=True, exist_ok=True)
                    _opus(run / row_out[key], target)
                    row_out[key] = _relative(target, run_out)
                else:
                    row_out[key] = None
            kept.append(json.dumps(row_out))
        atomic_write_text(run_out / "items.jsonl", "\n".join(kept) + "\n")
        write_run_page(run_out)
        row["results_dir"] = _relative(run_out, out)
    with (out / "results.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    return write_sweep_page(out)
