"""Bootstrap intervals over items and the paired test: a constant metric's point interval, coverage and
narrowing with more items, corpus rates recomputed per resample, seeds, the paired test's p-values, and
the rule for items only one run scored."""

from __future__ import annotations

import numpy as np
import pytest

from pockettts.eval.intervals import (
    ItemValues,
    bootstrap_interval,
    interval_metrics,
    item_values,
    paired_comparison,
    summary_intervals,
)
from pockettts.eval.wer import utterance_scores, word_error_rate
from tests.support import eval_item_row


def _means(values) -> ItemValues:
    """A per-item mean metric over ``values`` [N]."""
    return ItemValues(tuple(map(str, range(len(values)))), np.asarray(values, float), np.ones(len(values)))


def _sim_rows(values) -> list[dict]:
    return [eval_item_row(f"i{i}", 1, 10, sim=float(v)) for i, v in enumerate(values)]


def test_a_constant_metric_has_a_point_interval():
    low, high = bootstrap_interval(_means([0.7] * 48))
    assert low == high == pytest.approx(0.7)
    assert bootstrap_interval(_means([])) is None


def test_the_interval_holds_the_estimate_and_narrows_with_more_items():
    rng = np.random.default_rng(3)
    few, many = _means(rng.normal(0.5, 0.1, 48)), _means(rng.normal(0.5, 0.1, 1127))
    widths = []
    for values in (few, many):
        low, high = bootstrap_interval(values)
        assert low < values.estimate < high
        widths.append(high - low)
    # the width shrinks as 1/sqrt(N): sqrt(1127 / 48) ~ 4.8
    assert 3.5 < widths[0] / widths[1] < 6.5


def test_the_same_seed_gives_the_same_interval():
    values = _means(np.random.default_rng(0).random(100))
    assert bootstrap_interval(values, seed=5) == bootstrap_interval(values, seed=5)
    assert bootstrap_interval(values, seed=5) != bootstrap_interval(values, seed=6)


def test_a_corpus_rate_is_recomputed_from_counts_not_averaged_over_items():
    # 50 one-word items all wrong and 50 hundred-word items all right: corpus WER 50 / 5050 ~ 1%,
    # the mean of per-item WERs 50%
    rows = [eval_item_row(f"s{i}", 1, 1) for i in range(50)] + [
        eval_item_row(f"l{i}", 0, 100) for i in range(50)
    ]
    corpus, mean = item_values(rows, "wer_whisper"), item_values(rows, "mean_wer_whisper")
    assert corpus.estimate == pytest.approx(50 / 5050) and mean.estimate == pytest.approx(0.5)
    low, high = summary_intervals(rows)["wer_whisper_ci"]
    assert 0.004 < low < corpus.estimate < high < 0.02
    low, high = summary_intervals(rows)["mean_wer_whisper_ci"]
    assert 0.35 < low < 0.5 < high < 0.65


def test_rows_without_counts_get_them_from_their_transcripts():
    texts = [("the cat sat on the mat", "the cat sat on a mat"), ("a b c d", "a b"), ("hello there", "hello")]
    rows = [
        {"id": str(i), "text": ref, "transcript": hyp, **utterance_scores(ref, hyp, ["plain"])}
        for i, (ref, hyp) in enumerate(texts)
    ]
    bare = [{k: v for k, v in row.items() if k not in ("word_errors", "reference_words")} for row in rows]
    corpus = word_error_rate([t for t, _ in texts], [h for _, h in texts], "plain")["wer"]
    assert item_values(rows, "wer_plain").estimate == item_values(bare, "wer_plain").estimate == corpus
    assert interval_metrics(rows) == [
        "mean_wer_plain",
        "wer_plain",
        "cer_plain",
        "sim_prompt",
        "sim_reference",
    ]


def test_summary_intervals_skip_items_without_a_value():
    rows = _sim_rows([0.4, 0.6, 0.5]) + [eval_item_row("silent", 5, 5, sim=None)]
    intervals = summary_intervals(rows)
    assert item_values(rows, "sim_prompt").ids == ("i0", "i1", "i2")
    assert 0.4 <= intervals["sim_prompt_ci"][0] <= intervals["sim_prompt_ci"][1] <= 0.6
    assert "sim_reference_ci" not in intervals  # no item has one
    assert set(intervals) == {
        "wer_whisper_ci", "mean_wer_whisper_ci", "cer_whisper_ci", "sim_prompt_ci", "quality_dnsmos_ovrl_ci"
    }  # fmt: skip


def test_the_paired_test_finds_a_shift_and_not_an_identical_run():
    rng = np.random.default_rng(1)
    base = rng.normal(0.5, 0.1, 48)
    shifted = paired_comparison(
        _sim_rows(base + 0.02 + rng.normal(0, 0.01, 48)), _sim_rows(base), "sim_prompt"
    )
    assert shifted.p_value < 0.01 and 0.01 < shifted.ci[0] < shifted.difference < shifted.ci[1] < 0.03
    assert shifted.items == 48 and shifted.dropped == 0
    same = paired_comparison(_sim_rows(base), _sim_rows(base), "sim_prompt")
    assert same.difference == 0 and same.ci == (0.0, 0.0) and same.p_value == 1.0
    # noise without a shift is no difference
    noisy = paired_comparison(_sim_rows(base + rng.normal(0, 0.1, 48)), _sim_rows(base), "sim_prompt")
    assert noisy.p_value > 0.05


def test_a_corpus_rate_difference_is_paired_on_counts():
    base = [eval_item_row(f"i{i}", i % 3, 10) for i in range(60)]
    worse = [eval_item_row(f"i{i}", i % 3 + 1, 10) for i in range(60)]
    comparison = paired_comparison(worse, base, "wer_whisper")
    assert comparison.difference == pytest.approx(0.1) and comparison.p_value < 0.001
    assert comparison.ci == pytest.approx((0.1, 0.1))  # every item one error worse


def test_items_only_one_run_scored_are_dropped_and_counted():
    base = _sim_rows([0.5, 0.6, 0.7, 0.8])
    run = _sim_rows([0.9, 0.6, 0.7]) + [eval_item_row("extra", 0, 5)]  # i3 missing, "extra" not in base
    run[2]["sim_prompt"] = None  # silent in this run: no similarity
    comparison = paired_comparison(run, base, "sim_prompt")
    assert (comparison.items, comparison.dropped) == (2, 3)  # i0, i1 compared; i2, i3 and extra dropped
    assert comparison.run == pytest.approx(0.75) and comparison.baseline == pytest.approx(0.55)
    assert paired_comparison(run[:1], base[1:], "sim_prompt") is None  # nothing in common
