"""95% confidence intervals of evaluation metrics, and paired tests of two runs, by resampling items.

Every metric of a run is a ratio of sums over its items, ``sum(numerators) / sum(denominators)``
([N] each): a per-item mean (SIM-o, SIM-r, quality, WER-P's mean per-utterance WER) has denominators
of one; a corpus error rate (WER-W, CER-W) has each item's edit count over its reference length,
so a resample's rate is its errors over its reference words, not a mean of per-item rates.

Interval: the percentile bootstrap. ``resamples`` (2000) sets of N items are drawn with replacement
from a fixed seed, the metric is recomputed on each, and the 2.5th and 97.5th percentiles bound it.
It says how far the number could move on another test set of the same size from the same
population (each item's generation is one draw, so sampling noise is inside it); a constant
metric's interval is a point.

Paired comparison of a run with a baseline on the same items, matched by id: only the items
that both runs scored for that metric are compared (an item that failed or is missing in either
run, or has no value, e.g. SIM of a silent output, is dropped, and the drop is counted), so the
difference, run − baseline, is between the two runs' metrics on those common items. Its interval
resamples the common ids jointly (both runs' values of an item stay together). Its two-sided
p-value is a paired approximate randomisation test: in each of ``resamples`` draws every item's
two results are swapped with probability 1/2 and the difference recomputed, and
``p = (1 + #{|swapped difference| >= |difference|}) / (1 + resamples)``; for a per-item mean this is
the sign-flip permutation test of the per-item differences. The smallest p is 1 / (1 + resamples).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pockettts.eval.wer import utterance_scores

RESAMPLES = 2000
SEED = 0
CONFIDENCE = 0.95
# what results.json records about its intervals
BOOTSTRAP = {"method": "percentile bootstrap over items", "confidence": CONFIDENCE, "resamples": RESAMPLES,
             "seed": SEED, "paired_test": "approximate randomisation (per-item swaps)"}  # fmt: skip

# corpus rates: summary key prefix -> (row key of the errors, row key of the reference length)
_CORPUS_RATES = {"wer": ("word_errors", "reference_words"), "cer": ("char_errors", "reference_chars")}


@dataclass(frozen=True)
class ItemValues:
    """One metric's per-item terms; the metric is ``numerators.sum() / denominators.sum()``."""

    ids: tuple[str, ...]
    numerators: np.ndarray  # [N]
    denominators: np.ndarray  # [N]

    @property
    def estimate(self) -> float:
        return float(self.numerators.sum() / self.denominators.sum())

    def subset(self, ids: Sequence[str]) -> ItemValues:
        """The terms of ``ids`` (each one of this metric's ids), in that order."""
        position = {item: i for i, item in enumerate(self.ids)}
        index = np.array([position[item] for item in ids], dtype=np.int64)
        return ItemValues(tuple(ids), self.numerators[index], self.denominators[index])


@dataclass(frozen=True)
class PairedComparison:
    """A run against a baseline on the items both scored: the metric of each on those items, the
    difference run − baseline with its interval and p-value, and how many items were compared and
    how many only one run scored (``dropped``)."""

    metric: str
    run: float
    baseline: float
    difference: float
    ci: tuple[float, float]
    p_value: float
    items: int
    dropped: int


def interval_metrics(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The summary keys of ``rows`` (an ``items.jsonl``'s rows) that get intervals: mean per-utterance
    WER, corpus WER and CER under each normaliser, both speaker similarities, every quality score."""
    normalizers = sorted({n for row in rows for n in row.get("wer") or {}})
    quality = sorted({k for row in rows for k in row.get("quality") or {}})
    return (
        [f"{kind}_{n}" for kind in ("mean_wer", "wer", "cer") for n in normalizers]
        + ["sim_prompt", "sim_reference"]
        + [f"quality_{k}" for k in quality]
    )


def item_values(rows: Sequence[dict[str, Any]], metric: str) -> ItemValues:
    """The per-item terms of the summary key ``metric`` (``wer_whisper``, ``mean_wer_plain``,
    ``sim_prompt``, ``quality_dnsmos_ovrl``, ...); items without a value are left out. Rows written
    without error counts get them recomputed from their text and transcript."""
    kind, _, normalizer = metric.rpartition("_")
    if kind in _CORPUS_RATES:
        errors, length = _CORPUS_RATES[kind]
        terms = [(row["id"], *_counts(row, normalizer, errors, length)) for row in rows]
    else:
        terms = [(row["id"], value, 1.0) for row in rows if (value := _value(row, metric)) is not None]
    ids, numerators, denominators = zip(*terms) if terms else ((), (), ())
    return ItemValues(
        tuple(ids), np.array(numerators, dtype=np.float64), np.array(denominators, dtype=np.float64)
    )


def _value(row: dict[str, Any], metric: str) -> float | None:
    if metric.startswith("mean_wer_"):
        return row["wer"][metric.removeprefix("mean_wer_")]
    if metric.startswith("quality_"):
        return (row.get("quality") or {}).get(metric.removeprefix("quality_"))
    return row.get(metric)


def _counts(row: dict[str, Any], normalizer: str, errors: str, length: str) -> tuple[int, int]:
    """``(errors, reference length)`` of one row, from its text and transcript when it has no counts."""
    if errors not in row:
        row = {**row, **utterance_scores(row["text"], row["transcript"], [normalizer])}
    return row[errors][normalizer], row[length][normalizer]


def _resampled_ratios(values: ItemValues, index: np.ndarray) -> np.ndarray:
    """The metric on each resample of items ``index`` [R, N] -> [R]."""
    return values.numerators[index].sum(axis=1) / values.denominators[index].sum(axis=1)


def _percentiles(statistics: np.ndarray, confidence: float) -> tuple[float, float]:
    low, high = np.quantile(statistics, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(low), float(high)


def bootstrap_interval(
    values: ItemValues, resamples: int = RESAMPLES, seed: int = SEED, confidence: float = CONFIDENCE
) -> tuple[float, float] | None:
    """The percentile bootstrap interval of ``values``' metric; None without items."""
    if not values.ids:
        return None
    index = np.random.default_rng(seed).integers(0, len(values.ids), size=(resamples, len(values.ids)))
    return _percentiles(_resampled_ratios(values, index), confidence)


def summary_intervals(
    rows: Sequence[dict[str, Any]], resamples: int = RESAMPLES, seed: int = SEED
) -> dict[str, list[float]]:
    """``{"<metric>_ci": [low, high]}`` for every metric of :func:`interval_metrics` that has items,
    to sit beside the metric in ``results.json``'s summary."""
    intervals = {}
    for metric in interval_metrics(rows):
        interval = bootstrap_interval(item_values(rows, metric), resamples, seed)
        if interval is not None:
            intervals[f"{metric}_ci"] = list(interval)
    return intervals


def paired_comparison(
    run: Sequence[dict[str, Any]],
    baseline: Sequence[dict[str, Any]],
    metric: str,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    confidence: float = CONFIDENCE,
) -> PairedComparison | None:
    """``metric`` of the rows ``run`` against the rows ``baseline`` on the items both scored (see the
    module's docstring); None when they share no item."""
    run_all, baseline_all = item_values(run, metric), item_values(baseline, metric)
    shared = set(baseline_all.ids)
    common = [item for item in run_all.ids if item in shared]
    if not common:
        return None
    a, b = baseline_all.subset(common), run_all.subset(common)
    difference = b.estimate - a.estimate
    rng = np.random.default_rng(seed)
    index = rng.integers(0, len(common), size=(resamples, len(common)))
    differences = _resampled_ratios(b, index) - _resampled_ratios(a, index)
    # randomisation: swap[r, i] = 1 exchanges item i's two results in draw r
    swap = (rng.random((resamples, len(common))) < 0.5).astype(np.float64)
    moved = swap @ (a.numerators - b.numerators), swap @ (a.denominators - b.denominators)  # [R] each
    run_swapped = (b.numerators.sum() + moved[0]) / (b.denominators.sum() + moved[1])
    baseline_swapped = (a.numerators.sum() - moved[0]) / (a.denominators.sum() - moved[1])
    # the relative slack counts ties that differ only by rounding as ties
    extreme = np.abs(run_swapped - baseline_swapped) >= abs(difference) * (1 - 1e-9)
    return PairedComparison(
        metric=metric,
        run=b.estimate,
        baseline=a.estimate,
        difference=difference,
        ci=_percentiles(differences, confidence),
        p_value=float((1 + extreme.sum()) / (1 + resamples)),
        items=len(common),
        dropped=len(run_all.ids) + len(baseline_all.ids) - 2 * len(common),
    )
