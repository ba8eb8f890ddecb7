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
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5em auto; max-width: 76em; padding: 0 1em; color: #222; }
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
_LEGEND = (
    '<p class="muted">Errors: <span class="sub">reference → heard</span> substituted, '
    '<span class="del">reference</span> deleted (not said), <span class="ins">heard</span> inserted.</p>'
)


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


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], numeric_from: int = 1) -> str:
    """A table of already-escaped cells; columns from ``numeric_from`` on are right-aligned."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f'<td{" class=num" if i >= numeric_from else ""}>{c}</td>' for i, c in enumerate(row))
        + "</tr>"
        for row in rows
    )  # fmt: skip
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
    """An audio player for a file under ``results_dir``, or a note that none was kept."""
    if not relative or not (results_dir / relative).is_file():
        return f'<figure><figcaption>{caption}</figcaption><span class="muted">not kept</span></figure>'
    return (
        f"<figure><figcaption>{caption}</figcaption>"
        f'<audio controls preload="none" src="{_href(relative)}"></audio></figure>'
    )


def _item_section(results_dir: Path, row: dict[str, Any], normalizer: str) -> str:
    chunks = aligned_words(row["text"], row["transcript"], normalizer)
    players = "".join([
        _player(results_dir, row.get("prompt_wav"), "prompt"),
        _player(results_dir, row.get("wav"), "generation"),
        _player(results_dir, row.get("reference_wav"), "reference"),
    ])  # fmt: skip
    metrics = [(f"WER {n}", _number(v, True)) for n, v in row["wer"].items()]
    metrics += [(f"CER {n}", _number(v, True)) for n, v in row["cer"].items()]
    metrics += [("SIM-o", _number(row["sim_prompt"])), ("SIM-r", _number(row["sim_reference"]))]
    metrics += [(k, _number(v)) for k, v in sorted((row.get("quality") or {}).items())]
    metrics += [("seconds", f"{row['audio_seconds']:.2f}"), ("RTF", _number(row.get("rtf")))]
    flags = [name for name, on in (("silent", row["silent"]), ("no EOS", not row["eos_reached"])) if on]
    speaker = f" · speaker {html.escape(str(row['speaker']))}" if row.get("speaker") else ""
    return (
        f'<section class="item" id="item-{html.escape(row["id"], quote=True)}">'
        f"<h3>{html.escape(row['id'])}{speaker} · seed {row['seed']} "
        + "".join(f'<span class="flag">{f}</span> ' for f in flags)
        + f'</h3><div class="players">{players}</div>'
        f"<p>Text: {html.escape(row['text'])}<br>Heard: {html.escape(row['transcript'])}</p>"
        f'<p class="words">{marked_words_html(chunks)}</p>'
        + _table([html.escape(k) for k, _ in metrics], [[v for _, v in metrics]], numeric_from=0)
        + "</section>"
    )


def write_run_page(results_dir: str | Path) -> Path:
    """``<results_dir>/report.html`` from the run's ``results.json``, ``items.jsonl`` and kept audio."""
    results_dir = Path(results_dir)
    results = json.loads((results_dir / "results.json").read_text(encoding="utf-8"))
    rows = [json.loads(line) for line in (results_dir / "items.jsonl").read_text(encoding="utf-8").splitlines()]
    knobs, summary = results["knobs"], results["summary"]
    normalizer = knobs["normalizers"][0]
    values = [k for k in summary if not k.endswith("_ci") and summary[k] is not None]
    body = [
        _table(["knob", "value"], [[html.escape(k), html.escape(json.dumps(v))] for k, v in knobs.items()], 2),
        "<h2>Summary</h2>",
        _table(["metric", "value"], [[html.escape(k), html.escape(_metric(summary, k))] for k in values]),
        '<p class="muted">Rates in percent; [low, high]: 95% confidence interval where computed.</p>',
    ]
    for key, label in (("missing", "Missing audio"), ("skipped", "Skipped"), ("failed", "Failed")):
        if results.get(key):
            listed = ", ".join(html.escape(json.dumps(entry)) for entry in results[key])
            body.append(f"<p>{label} ({len(results[key])}): {listed}</p>")
    body += [f"<h2>Items ({len(rows)})</h2>", _LEGEND.replace("Errors:", f"Errors ({normalizer} normaliser):")]
    body += [_item_section(results_dir, row, normalizer) for row in rows]
    title = f"{knobs['testset']}: {knobs['checkpoint']}"
    return atomic_write_text(results_dir / PAGE_NAME, _document(title, "\n".join(body)))


# -- a sweep ------------------------------------------------------------------------------------------
def _cells(line: str) -> list[str]:
    return [html.escape(c.strip().strip("`")) for c in line.strip().strip("|").split("|")]


def markdown_tables_html(text: str) -> str:
    """A ``results.md`` as HTML: its pipe tables as tables, every other non-blank line a paragraph."""
    parts, table = [], []
    for line in [*text.splitlines(), ""]:
        if line.lstrip().startswith("|"):
            table.append(line)
            continue
        if table:
            body = [_cells(row) for row in table[2:]]  # table[1] is the |---| alignment row
            parts.append(_table(_cells(table[0]), body, numeric_from=sum("---:" not in c for c in table[1].split("|")) - 2))
            table = []
        if line.strip():
            parts.append(f"<p>{html.escape(line.strip().lstrip('# '))}</p>")
    return "\n".join(parts)
