"""Static HTML pages to listen to evaluation results: open them from disk, no server needed.

``write_run_page(results_dir)`` writes ``<results_dir>/report.html``: the run's knobs and summary
(with ``<key>_ci`` intervals when ``results.json`` has them), then per item the prompt, the
generation and the reference recording as players, the transcript with its errors marked (words
aligned by jiwer after the run's first normaliser, the one its headline WER uses) and the item's
metrics. ``write_sweep_page(report_dir)`` writes ``<report_dir>/report.html`` for a
``pockettts-tools report`` folder: its ``results.md`` tables, its ``vs_<knob>.png`` plots and a
link to each run's own page. Every path is relative, so a folder copied elsewhere still plays; the
pages hold no script and load nothing from the network.
"""

from __future__ import annotations

import csv
import html
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pockettts.eval.wer import get_normalizer
from pockettts.extras import import_eval_module
from pockettts.io import atomic_write_text

PAGE_NAME = "report.html"
_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5em auto; max-width: 76em; padding: 0 1em; }
table { border-collapse: collapse; margin: .6em 0; }
th, td { border: 1px solid #ccc; padding: .2em .5em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
section.item { border-top: 2px solid #ddd; padding: .4em 0 .8em; }
.players { display: flex; flex-wrap: wrap; gap: 1em; }
.players figure { margin: 0; }
.players figcaption, .muted { color: #666; font-size: 90%; }
.words { font-family: ui-monospace, monospace; }
.sub { background: #ffe0a3; }
.del { background: #ffc4c4; text-decoration: line-through; }
.ins { background: #c4dcff; font-style: italic; }
.flag { background: #ffc4c4; padding: 0 .3em; border-radius: 3px; }
figure.plot img { max-width: 100%; border: 1px solid #ddd; }
"""


# -- the transcript's errors --------------------------------------------------------------------------
def aligned_words(reference: str, hypothesis: str, normalizer: str) -> list[tuple[str, list[str], list[str]]]:
    """``(kind, reference words, hypothesis words)`` chunks of jiwer's word alignment after
    ``normalizer``; kind is ``equal``, ``substitute``, ``delete`` or ``insert``."""
    normalize = get_normalizer(normalizer)
    ref, hyp = normalize(reference).split(), normalize(hypothesis).split()
    if not ref:  # jiwer refuses an empty reference: every heard word is inserted
        return [("insert", [], hyp)] if hyp else []
    output = import_eval_module("jiwer").process_words(" ".join(ref), " ".join(hyp))
    return [
        (c.type, ref[c.ref_start_idx : c.ref_end_idx], hyp[c.hyp_start_idx : c.hyp_end_idx])
        for c in output.alignments[0]
    ]


def marked_words_html(chunks: Iterable[tuple[str, list[str], list[str]]]) -> str:
    """The aligned words as HTML, each error in the class the legend explains."""
    parts = []
    for kind, ref, hyp in chunks:
        ref_text, hyp_text = html.escape(" ".join(ref)), html.escape(" ".join(hyp))
        if kind == "equal":
            parts.append(ref_text)
        elif kind == "substitute":
            parts.append(f'<span class="sub">{ref_text} → {hyp_text}</span>')
        elif kind == "delete":
            parts.append(f'<span class="del">{ref_text}</span>')
        else:
            parts.append(f'<span class="ins">{hyp_text}</span>')
    return " ".join(parts)


# -- formatting ---------------------------------------------------------------------------------------
def _is_rate(key: str) -> bool:
    """WER and CER keys (``wer_whisper``, ``mean_wer_plain``, ``cer_plain``), shown in percent."""
    return key.startswith(("wer", "mean_wer", "cer"))


def _number(value: Any, percent: bool = False) -> str:
    """A metric as shown: flags and counts as they are, rates in percent, the rest with 3 decimals."""
    if value is None:
        return "–"
    if percent:
        return f"{100 * value:.2f} %"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _metric(summary: dict[str, Any], key: str) -> str:
    """A summary value, with its 95% interval when the summary has ``<key>_ci``."""
    percent = _is_rate(key)
    text, interval = _number(summary[key], percent), summary.get(f"{key}_ci")
    if isinstance(interval, Sequence) and len(interval) == 2:
        low, high = (_number(v, percent).removesuffix(" %") for v in interval)
        text += f" [{low}, {high}]"
    return text


def _knob(value: Any) -> str:
    return "+".join(map(str, value)) if isinstance(value, list) else str(value)


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], left_columns: int = 1) -> str:
    """A table of already-escaped cells; the columns after the first ``left_columns`` are numbers,
    right-aligned."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(f"<td{' class=num' if i >= left_columns else ''}>{c}</td>" for i, c in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _href(path: str | Path) -> str:
    """A relative path as a URL attribute value (each path part percent-encoded)."""
    return html.escape(quote(Path(path).as_posix()), quote=True)


def _document(title: str, body: str) -> str:
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_STYLE}</style></head>\n<body>\n<h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n"
    )


# -- one run ------------------------------------------------------------------------------------------
def _player(results_dir: Path, relative: str | None, caption: str) -> str:
    """An audio player for a file under ``results_dir``, or a note that none was kept. Players load
    nothing until played: a page of a thousand items opens at once."""
    if not relative or not (results_dir / relative).is_file():
        return f'<figure><figcaption>{caption}</figcaption><span class="muted">not kept</span></figure>'
    return (
        f"<figure><figcaption>{caption}</figcaption>"
        f'<audio controls preload="none" src="{_href(relative)}"></audio></figure>'
    )


def _item_metrics(row: dict[str, Any]) -> list[tuple[str, str]]:
    metrics = [(f"WER {n}", _number(v, True)) for n, v in row["wer"].items()]
    metrics += [(f"CER {n}", _number(v, True)) for n, v in row["cer"].items()]
    metrics += [("SIM-o", _number(row["sim_prompt"])), ("SIM-r", _number(row["sim_reference"]))]
    metrics += [(k, _number(v)) for k, v in sorted((row["quality"] or {}).items())]
    return metrics + [("seconds", f"{row['audio_seconds']:.2f}"), ("RTF", _number(row["rtf"]))]


def _item_section(results_dir: Path, row: dict[str, Any], normalizer: str) -> str:
    """One item: heading with its flags, the three players, text, transcript, marked words, metrics."""
    players = "".join([
        _player(results_dir, row.get("kept_prompt"), "prompt"),
        _player(results_dir, row["wav"], "generation"),
        _player(results_dir, row.get("kept_reference"), "reference"),
    ])  # fmt: skip
    flags = [name for name, on in (("silent", row["silent"]), ("no EOS", not row["eos_reached"])) if on]
    speaker = f" · speaker {html.escape(str(row['speaker']))}" if row.get("speaker") else ""
    metrics, words = _item_metrics(row), aligned_words(row["text"], row["transcript"], normalizer)
    return "".join([
        f'<section class="item" id="item-{html.escape(row["id"], quote=True)}">',
        f"<h3>{html.escape(row['id'])}{speaker} · seed {row['seed']} ",
        *(f'<span class="flag">{flag}</span> ' for flag in flags),
        f'</h3><div class="players">{players}</div>',
        f"<p>Text: {html.escape(row['text'])}<br>Heard: {html.escape(row['transcript'])}</p>",
        f'<p class="words">{marked_words_html(words)}</p>',
        _table([html.escape(k) for k, _ in metrics], [[v for _, v in metrics]], left_columns=0),
        "</section>",
    ])  # fmt: skip


def write_run_page(results_dir: str | Path) -> Path:
    """``<results_dir>/report.html`` from the run's ``results.json``, ``items.jsonl`` and kept audio."""
    results_dir = Path(results_dir)
    results = json.loads((results_dir / "results.json").read_text(encoding="utf-8"))
    lines = (results_dir / "items.jsonl").read_text(encoding="utf-8").splitlines()
    rows = list({row["id"]: row for row in map(json.loads, lines)}.values())  # an item redone: its last row
    knobs, summary = results["knobs"], results["summary"]
    normalizer = knobs["normalizers"][0]
    set_knobs = [(k, v) for k, v in knobs.items() if v is not None]  # unset ones are the defaults
    shown = [k for k in summary if not k.endswith("_ci") and summary[k] is not None]
    body = [
        _table(["knob", "value"], [[html.escape(k), html.escape(_knob(v))] for k, v in set_knobs], 2),
        "<h2>Summary</h2>",
        _table(["metric", "value"], [[html.escape(k), html.escape(_metric(summary, k))] for k in shown]),
        '<p class="muted">Rates in percent; [low, high]: the 95% confidence interval, where computed.</p>',
    ]
    for key, label in (("missing", "Missing audio"), ("skipped", "Skipped"), ("failed", "Failed")):
        if results.get(key):
            listed = ", ".join(html.escape(json.dumps(entry)) for entry in results[key])
            body.append(f"<p>{label} ({len(results[key])}): {listed}</p>")
    body += [
        f"<h2>Items ({len(rows)})</h2>",
        f'<p class="muted">Words aligned after the {html.escape(normalizer)} normaliser: '
        '<span class="sub">text → heard</span> substituted, <span class="del">text</span> deleted '
        '(not said), <span class="ins">heard</span> inserted.</p>',
        *(_item_section(results_dir, row, normalizer) for row in rows),
    ]
    title = f"{knobs['testset']}: {knobs['checkpoint']}"
    return atomic_write_text(results_dir / PAGE_NAME, _document(title, "\n".join(body)))


# -- a sweep ------------------------------------------------------------------------------------------
def _cells(line: str) -> list[str]:
    return [html.escape(c.strip()) for c in line.strip().strip("|").split("|")]


def markdown_tables_html(text: str) -> str:
    """Markdown as ``results.md`` writes it, as HTML: pipe tables as tables (right-aligned columns
    stay right-aligned), headings and every other non-blank line as paragraphs."""
    parts, table = [], []
    for line in [*text.splitlines(), ""]:
        if line.lstrip().startswith("|"):
            table.append(line)
            continue
        if table:  # table[1] is the |---|---:| alignment row
            left = sum(not cell.endswith(":") for cell in _cells(table[1]))
            parts.append(_table(_cells(table[0]), [_cells(row) for row in table[2:]], left))
            table = []
        if line.strip():
            parts.append(f"<p>{html.escape(line.strip().lstrip('#').strip())}</p>")
    return "\n".join(parts)


def _run_links(report_dir: Path) -> list[str]:
    """A list item per run of ``results.csv``: a link to its page, or its folder's name without one."""
    with (report_dir / "results.csv").open(newline="", encoding="utf-8") as handle:
        runs = [report_dir / row["results_dir"] for row in csv.DictReader(handle)]  # relative: to the report
    links = []
    for run in runs:
        if (run / PAGE_NAME).is_file():
            target = os.path.relpath(run / PAGE_NAME, report_dir)
            links.append(f'<li><a href="{_href(target)}">{html.escape(run.name)}</a></li>')
        else:
            links.append(f"<li>{html.escape(run.name)} (no page)</li>")
    return links


def write_sweep_page(report_dir: str | Path) -> Path:
    """``<report_dir>/report.html`` from a report folder's ``results.md``, ``results.csv`` and plots."""
    report_dir = Path(report_dir)
    plots = sorted(report_dir.glob("vs_*.png"))
    body = [
        markdown_tables_html((report_dir / "results.md").read_text(encoding="utf-8")),
        *(
            f'<figure class="plot"><img src="{_href(p.name)}" alt="{html.escape(p.stem)}">'
            f"<figcaption>{html.escape(p.name)}</figcaption></figure>"
            for p in plots
        ),
        "<h2>Runs</h2><ul>",
        *_run_links(report_dir),
        "</ul>",
    ]
    return atomic_write_text(report_dir / PAGE_NAME, _document(f"Report: {report_dir.name}", "\n".join(body)))
