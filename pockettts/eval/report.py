"""Gather evaluation results into one table and plots of every metric against each varying knob.

Every ``results.json`` under the given directories (written by ``pockettts.eval.runner``) is one
row. ``OUT/results.md`` is a markdown table (knobs that vary first, the fixed ones in a line above
it), ``OUT/results.csv`` has every knob and number, and ``OUT/vs_<knob>.png`` plots WER, CER,
speaker similarity and quality against each varying knob, one line per setting of the other
varying knobs, with the baseline (default CFG 1 when CFG varies, else the first value of the first
varying knob) drawn as a star. Command line: ``pockettts-tools report``.

Where a result's ``items.jsonl`` sits beside its ``results.json``, its metrics get 95% bootstrap
intervals over items (``pockettts.eval.intervals``; brackets in the table, error bars in the plots),
and every other result is compared with its baseline result on the items both scored: the paired
difference with its interval and p-value, in the table for ``paired_metrics`` and in
``OUT/paired.csv`` for every metric.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pockettts.eval.html_page import write_sweep_page
from pockettts.eval.intervals import (
    RESAMPLES,
    PairedComparison,
    interval_metrics,
    paired_comparison,
    summary_intervals,
)

# Knobs in the order tables and defaults consider them; any other knob follows.
KNOB_ORDER = [
    "testset", "context_noise", "checkpoint", "checkpoint_sha", "step", "ema", "cfg_scale", "temperature",
    "eos_threshold", "noise_clamp", "seed", "asr",
]  # fmt: skip
KNOB_LABELS = {
    "cfg_scale": "CFG", "temperature": "temp.", "eos_threshold": "EOS thr.", "context_noise": "noise level",
    "noise_clamp": "noise clamp", "checkpoint_sha": "sha",
}  # fmt: skip

# (summary key, column header, scale): percentages for error rates.
_COLUMNS = [
    ("items", "items", 1),
    ("mean_wer_plain", "WER-P %", 100),
    ("wer_whisper", "WER-W %", 100),
    ("cer_whisper", "CER-W %", 100),
    ("sim_prompt", "SIM-o", 1),
    ("sim_reference", "SIM-r", 1),
]
_TAIL = [
    ("silent", "silent", 1), ("no_eos", "no EOS", 1), ("missing", "missing", 1), ("skipped", "skipped", 1),
    ("failed", "failed", 1), ("rtf", "RTF", 1), ("ttfa_seconds", "TTFA s", 1),
]  # fmt: skip
LEGEND = (
    "WER-P: F5 / Seed-TTS rule (lowercase, punctuation deleted), mean of per-utterance WER; "
    "WER-W, CER-W: Whisper's EnglishTextNormalizer, corpus level. SIM-o: speaker similarity to the "
    "prompt, SIM-r: to the reference recording. RTF: generation wall time / audio seconds (CPU); "
    "TTFA: median time to the first 80 ms chunk."
)
INTERVALS_LEGEND = (
    f"[low, high]: 95% bootstrap interval over items ({RESAMPLES} resamples). Δ … vs baseline: the "
    "paired difference from the baseline result on the items both scored, its 95% interval and the "
    "two-sided p-value of a paired randomisation test; 'n items' when some item was scored by one only."
)
PLOT_METRICS = ["mean_wer_plain", "wer_whisper", "cer_whisper", "sim_prompt"]
PAIRED_METRICS = ["wer_whisper"]
# Comparisons of a sweep: results_dir -> metric -> the result against its baseline result.
Comparisons = dict[str, dict[str, PairedComparison]]


class ReportError(ValueError):
    """No results, or a baseline that names no knob."""


def collect(directories: Sequence[str | Path]) -> list[dict[str, Any]]:
    """Every ``results.json`` under ``directories``, sorted by their knobs; each one's ``results_dir``
    is where it was found (a moved or copied results folder still finds its items)."""
    paths = sorted({p for d in directories for p in Path(d).rglob("results.json")})
    if not paths:
        raise ReportError(f"no results.json under {', '.join(map(str, directories))}")
    results = [{**json.loads(p.read_text()), "results_dir": str(p.parent)} for p in paths]
    return sorted(results, key=lambda r: [_sort_key(r["knobs"].get(k)) for k in _knob_names(results)])


def read_items(result: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The rows of the ``items.jsonl`` beside a result's ``results.json``; None without one."""
    path = Path(result["results_dir"]) / "items.jsonl"
    if not path.is_file():
        return None
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _sort_key(value: Any) -> tuple:
    return (
        (0, value, "")
        if isinstance(value, (int, float)) and not isinstance(value, bool)
        else (1, 0, str(value))
    )


def _knob_names(results: Sequence[dict[str, Any]]) -> list[str]:
    names = {k for r in results for k in r["knobs"]}
    return [k for k in KNOB_ORDER if k in names] + sorted(names - set(KNOB_ORDER))


def varying_knobs(results: Sequence[dict[str, Any]]) -> list[str]:
    """Knobs whose value is not the same in every result."""
    return [k for k in _knob_names(results) if len({json.dumps(r["knobs"].get(k)) for r in results}) > 1]


def _columns(results: Sequence[dict[str, Any]]) -> list[tuple[str, str, int]]:
    keys = {k for r in results for k, v in r["summary"].items() if v is not None}
    quality = _quality_metrics(results)
    columns = _COLUMNS + [(k, _header(k), 1) for k in quality] + _TAIL
    # rarely non-zero counts get a column only when some result has one
    rare = {"skipped", "failed"}
    return [
        c for c in columns if c[0] in keys and (c[0] not in rare or any(r["summary"][c[0]] for r in results))
    ]


def _quality_metrics(results: Sequence[dict[str, Any]]) -> list[str]:
    """The headline quality score of each result's scorer (``quality_primary``), e.g. DNSMOS overall."""
    return sorted({f"quality_{r['quality_primary']}" for r in results if r.get("quality_primary")})


def _header(key: str) -> str:
    if key.startswith("quality_"):
        return key.removeprefix("quality_").replace("_", " ")
    return next((h for k, h, _ in _COLUMNS + _TAIL if k == key), key)


def _fmt(value: Any, scale: int = 1) -> str:
    """A metric cell: counts as integers, percentages with 2 decimals, the rest with 3."""
    if value is None:
        return "–"
    if isinstance(value, int) and scale == 1:
        return str(value)
    return f"{value * scale:.2f}" if scale != 1 or abs(value) >= 10 else f"{value:.3f}"


def _knob(value: Any) -> str:
    """A knob value as written in tables, legends and the CSV: ``1.5``, ``whisper+plain``."""
    if value is None:
        return "–"
    if isinstance(value, list):
        return "+".join(map(str, value))
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def parse_baseline(settings: Sequence[str]) -> dict[str, str]:
    """``["cfg_scale=1", ...]`` -> ``{"cfg_scale": "1"}``."""
    baseline = {}
    for setting in settings:
        key, sep, value = setting.partition("=")
        if not sep or not key:
            raise ReportError(f"baseline {setting!r} is not knob=value")
        baseline[key] = value
    return baseline


def default_baseline(results: Sequence[dict[str, Any]]) -> dict[str, str]:
    """CFG 1 when CFG varies and was run; otherwise the first value of the first varying knob."""
    varying = varying_knobs(results)
    if "cfg_scale" in varying and any(r["knobs"]["cfg_scale"] == 1 for r in results):
        return {"cfg_scale": "1"}
    if not varying:
        return {}
    first = varying[0]
    return {first: str(min((r["knobs"].get(first) for r in results), key=_sort_key))}


def _matches(value: Any, wanted: str) -> bool:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return float(wanted) == float(value)
        except ValueError:
            return False
    return str(value) == wanted


def is_baseline(result: dict[str, Any], baseline: dict[str, str]) -> bool:
    return bool(baseline) and all(_matches(result["knobs"].get(k), v) for k, v in baseline.items())


def check_baseline(results: Sequence[dict[str, Any]], baseline: dict[str, str]) -> None:
    names = set(_knob_names(results))
    for key in baseline:
        if key not in names:
            raise ReportError(
                f"baseline knob {key!r} is not a knob of these results ({', '.join(sorted(names))})"
            )
    if baseline and not any(is_baseline(r, baseline) for r in results):
        raise ReportError(f"no result has the baseline setting {baseline}")


def add_intervals(results: Sequence[dict[str, Any]], items: dict[str, list[dict[str, Any]] | None]) -> None:
    """Put each result's ``<metric>_ci`` intervals, computed from its items (``items``: results_dir ->
    rows), into its summary; results made before the runner wrote intervals get them too."""
    for result in results:
        rows = items.get(result["results_dir"])
        if rows:
            result["summary"].update(summary_intervals(rows))


def _same_knobs(first: dict[str, Any], second: dict[str, Any], knobs: Sequence[str]) -> bool:
    return all(json.dumps(first["knobs"].get(k)) == json.dumps(second["knobs"].get(k)) for k in knobs)


def baseline_partner(
    result: dict[str, Any], results: Sequence[dict[str, Any]], baseline: dict[str, str]
) -> dict[str, Any] | None:
    """The baseline result that ``result`` is compared with: on the same test set and prompts, and
    agreeing with it on every knob that varies among the baseline results (with ``context_noise=0``
    run at several CFGs, a noisy teacher at CFG 2 is compared with the noise-free one at CFG 2).
    None for a baseline result itself, or when no single baseline result fits."""
    if not baseline or is_baseline(result, baseline):
        return None
    bases = [r for r in results if is_baseline(r, baseline)]
    knobs = list(dict.fromkeys(["testset", *varying_knobs(bases)]))
    fits = [
        r
        for r in bases
        if _same_knobs(r, result, knobs) and r.get("testset_options") == result.get("testset_options")
    ]
    return fits[0] if len(fits) == 1 else None


def compare_with_baseline(
    results: Sequence[dict[str, Any]],
    items: dict[str, list[dict[str, Any]] | None],
    baseline: dict[str, str],
) -> Comparisons:
    """Every result with a baseline partner (:func:`baseline_partner`), both with items, against that
    partner on every metric with intervals."""
    comparisons: Comparisons = {}
    for result in results:
        partner = baseline_partner(result, results, baseline)
        rows = items.get(result["results_dir"])
        base_rows = items.get(partner["results_dir"]) if partner else None
        if not rows or not base_rows:
            continue
        shared = [m for m in interval_metrics(rows) if m in interval_metrics(base_rows)]
        pairs = {m: paired_comparison(rows, base_rows, m) for m in shared}
        comparisons[result["results_dir"]] = {m: c for m, c in pairs.items() if c is not None}
    return comparisons


def _signed(value: float, scale: int) -> str:
    return f"{value * scale:+.2f}" if scale != 1 else f"{value:+.3f}"


def _paired_cell(comparison: PairedComparison | None, scale: int) -> str:
    """``+2.10 [+0.50, +3.70], p=0.012``, with the number of items compared when one run lacks some."""
    if comparison is None:
        return "–"
    low, high = comparison.ci
    p = "p<0.001" if comparison.p_value < 0.001 else f"p={comparison.p_value:.3f}"
    cell = f"{_signed(comparison.difference, scale)} [{_signed(low, scale)}, {_signed(high, scale)}], {p}"
    return cell + (f", {comparison.items} items" if comparison.dropped else "")


def _cell(summary: dict[str, Any], key: str, scale: int) -> str:
    """A metric with its interval when the summary has ``<key>_ci``: ``12.30 [10.10, 14.80]``."""
    interval = summary.get(f"{key}_ci")
    text = _fmt(summary.get(key), scale)
    return text + (f" [{_fmt(interval[0], scale)}, {_fmt(interval[1], scale)}]" if interval else "")


def markdown_table(
    results: Sequence[dict[str, Any]],
    baseline: dict[str, str] | None = None,
    comparisons: Comparisons | None = None,
    paired_metrics: Sequence[str] = PAIRED_METRICS,
) -> str:
    """A paper-ready markdown table: a line of the fixed knobs, then one row per result, each metric
    with its interval where the summary has one, and a ``Δ<metric> vs baseline`` column per
    ``paired_metrics`` entry that ``comparisons`` holds."""
    baseline, comparisons = baseline or {}, comparisons or {}
    varying = varying_knobs(results) if len(results) > 1 else ["checkpoint", "cfg_scale", "temperature"]
    fixed = [k for k in _knob_names(results) if k not in varying and results[0]["knobs"].get(k) is not None]
    columns = _columns(results)
    paired = [m for m in paired_metrics if any(m in c for c in comparisons.values())]
    header = [KNOB_LABELS.get(k, k) for k in varying] + [c[1] for c in columns]
    header += [f"Δ{_header(m)} vs baseline [CI], p" for m in paired]
    if baseline:
        header.append("baseline")
    lines = [
        "Fixed: " + ", ".join(f"{KNOB_LABELS.get(k, k)} {_knob(results[0]['knobs'][k])}" for k in fixed),
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i < len(varying) else "---:" for i in range(len(header))) + "|",
    ]
    for result in results:
        cells = [_knob(result["knobs"].get(k)) for k in varying]
        cells += [_cell(result["summary"], key, scale) for key, _, scale in columns]
        mine = comparisons.get(result["results_dir"], {})
        cells += [_paired_cell(mine.get(m), _scale(m)) for m in paired]
        if baseline:
            cells.append("★" if is_baseline(result, baseline) else "")
        lines.append("| " + " | ".join(cells) + " |")
    intervals = any(k.endswith("_ci") for r in results for k in r["summary"])
    return "\n".join(lines + ["", LEGEND] + ([INTERVALS_LEGEND] if intervals else [])) + "\n"


def _scale(metric: str) -> int:
    """100 for error rates (shown in %), 1 otherwise."""
    return 100 if "wer" in metric or "cer" in metric else 1


def write_csv(results: Sequence[dict[str, Any]], path: Path, baseline: dict[str, str]) -> Path:
    """Every knob and summary number per result; an interval as ``<metric>_ci_low`` and ``_ci_high``."""
    knobs = _knob_names(results)
    keys = sorted({k for r in results for k in r["summary"]})
    metrics = [c for k in keys for c in ([f"{k}_low", f"{k}_high"] if k.endswith("_ci") else [k])]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(knobs + metrics + ["baseline", "results_dir"])
        for r in results:
            numbers = []
            for k in keys:
                value = r["summary"].get(k)
                numbers += (value or [None, None]) if k.endswith("_ci") else [value]
            writer.writerow(
                [_knob(r["knobs"].get(k)) for k in knobs]
                + numbers
                + [is_baseline(r, baseline), r["results_dir"]]
            )
    return path


def write_paired_csv(
    results: Sequence[dict[str, Any]], comparisons: Comparisons, baseline: dict[str, str], path: Path
) -> Path:
    """One row per result and metric compared with the baseline: the varying knobs, both metrics on
    the common items, the difference run − baseline, its interval, p-value, items compared and
    dropped, and both results directories."""
    varying = varying_knobs(results)
    fields = ["metric", "run", "baseline", "difference", "ci_low", "ci_high", "p_value", "items", "dropped"]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(varying + fields + ["results_dir", "baseline_dir"])
        for result in results:
            partner = baseline_partner(result, results, baseline)
            knobs = [_knob(result["knobs"].get(k)) for k in varying]
            for c in comparisons.get(result["results_dir"], {}).values():
                numbers = [c.run, c.baseline, c.difference, *c.ci, c.p_value, c.items, c.dropped]
                writer.writerow(knobs + [c.metric, *numbers, result["results_dir"], partner["results_dir"]])
    return path


def _numeric(values: Sequence[Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _series_knobs(results: Sequence[dict[str, Any]], knob: str, varying: Sequence[str]) -> list[str]:
    """The other varying knobs that split ``knob``'s points into lines: those not fixed by ``knob``'s
    value (a checkpoint and its noise level vary together: one line, not one per checkpoint)."""
    split = []
    for other in varying:
        if other == knob:
            continue
        pairs = {(json.dumps(r["knobs"].get(knob)), json.dumps(r["knobs"].get(other))) for r in results}
        if len(pairs) > len({p[0] for p in pairs}):
            split.append(other)
    return split


def plot_knob(
    results: Sequence[dict[str, Any]], knob: str, path: Path, baseline: dict[str, str], metrics: Sequence[str]
) -> Path:
    """One PNG: a panel per metric, ``metric`` against ``knob``, one line per other setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    varying = varying_knobs(results)
    split = _series_knobs(results, knob, varying)
    values = [r["knobs"].get(knob) for r in results]
    numeric = _numeric(values)
    categories = sorted({json.dumps(v) for v in values}, key=lambda s: _sort_key(json.loads(s)))
    metrics = [m for m in metrics if any(r["summary"].get(m) is not None for r in results)]
    if not metrics:
        raise ReportError("none of the metrics to plot has a value in these results")
    columns = min(3, len(metrics))
    rows_n = -(-len(metrics) // columns)
    fig, axes = plt.subplots(rows_n, columns, figsize=(4.2 * columns, 3.3 * rows_n + 0.4), squeeze=False)
    for ax in axes.flat[len(metrics) :]:
        ax.set_visible(False)
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        label = ", ".join(f"{KNOB_LABELS.get(k, k)} {_knob(r['knobs'].get(k))}" for k in split)
        groups.setdefault(label, []).append(r)
    for ax, metric in zip(axes.flat, metrics):
        scale = _scale(metric)
        for label, rows in groups.items():
            rows = sorted(rows, key=lambda r: _sort_key(r["knobs"].get(knob)))
            points = [(r, r["summary"].get(metric)) for r in rows if r["summary"].get(metric) is not None]
            xs = [_x(r["knobs"].get(knob), numeric, categories) for r, _ in points]
            ys = [v * scale for _, v in points]
            drawn = ax.errorbar(xs, ys, yerr=_error_bars(points, metric, scale), marker="o", capsize=3,
                                label=label or None)  # fmt: skip
            for (r, _), x, y in zip(points, xs, ys):
                if is_baseline(r, baseline):
                    ax.plot([x], [y], marker="*", markersize=16, color=drawn.lines[0].get_color(),
                            markeredgecolor="black", linestyle="none")  # fmt: skip
        if not numeric:
            ax.set_xticks(range(len(categories)))
            ax.set_xticklabels(
                [_knob(json.loads(c)) for c in categories], rotation=30, ha="right", fontsize=7
            )
        ax.set_xlabel(KNOB_LABELS.get(knob, knob))
        ax.set_ylabel(_header(metric))
        ax.grid(alpha=0.3)
    if any(groups):
        axes.flat[0].legend(fontsize=7)
    note = ", ".join(f"{KNOB_LABELS.get(k, k)}={v}" for k, v in baseline.items())
    fig.suptitle(f"metrics vs {KNOB_LABELS.get(knob, knob)}" + (f"  (★ baseline: {note})" if note else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _error_bars(points: Sequence[tuple[dict[str, Any], float]], metric: str, scale: int) -> list[list[float]]:
    """Below and above each point ``(result, value)``, its interval's extent (0 without one) [2, P]."""
    below, above = [], []
    for result, value in points:
        low, high = result["summary"].get(f"{metric}_ci") or (value, value)
        # a percentile interval can miss its point by a hair; matplotlib refuses negative bars
        below.append(max(value - low, 0.0) * scale)
        above.append(max(high - value, 0.0) * scale)
    return [below, above]


def _x(value: Any, numeric: bool, categories: list[str]) -> float:
    return float(value) if numeric else float(categories.index(json.dumps(value)))


def best_setting(results: Sequence[dict[str, Any]], knob: str, metric: str = "wer_whisper") -> str:
    """The value of ``knob`` in the result with the lowest ``metric`` (an error rate; results without it
    are ignored), e.g. the checkpoint that reads best at its best CFG scale."""
    scored = [r for r in results if r["summary"].get(metric) is not None]
    if not scored:
        raise ReportError(f"no result has a {metric!r}")
    if knob not in _knob_names(results):
        raise ReportError(f"{knob!r} is not a knob of these results ({', '.join(_knob_names(results))})")
    return _knob(min(scored, key=lambda r: r["summary"][metric])["knobs"].get(knob))


def build_report(
    directories: Sequence[str | Path],
    out: str | Path,
    baseline: dict[str, str] | None = None,
    metrics: Sequence[str] | None = None,
    paired_metrics: Sequence[str] = PAIRED_METRICS,
) -> dict[str, Any]:
    """Write ``results.md``, ``results.csv``, ``paired.csv`` and a ``vs_<knob>.png`` per varying knob
    under ``out``; ``paired_metrics`` get a column of differences from the baseline in the table."""
    results = collect(directories)
    baseline = default_baseline(results) if baseline is None else baseline
    check_baseline(results, baseline)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    items = {r["results_dir"]: read_items(r) for r in results}
    add_intervals(results, items)
    comparisons = compare_with_baseline(results, items, baseline)
    table = markdown_table(results, baseline, comparisons, paired_metrics)
    (out / "results.md").write_text(table)
    metrics = list(metrics) if metrics else PLOT_METRICS + _quality_metrics(results)
    plots = [plot_knob(results, k, out / f"vs_{k}.png", baseline, metrics) for k in varying_knobs(results)]
    return {
        "results": len(results),
        "table": table,
        "csv": write_csv(results, out / "results.csv", baseline),
        "paired": write_paired_csv(results, comparisons, baseline, out / "paired.csv"),
        "comparisons": comparisons,
        "plots": plots,
        "page": write_sweep_page(out),  # after results.csv, which it reads
        "baseline": baseline,
    }
