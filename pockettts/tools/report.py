"""One table, and plots of every metric against each varying knob, of evaluation results.

    pockettts-tools report logs/eval/sweeps/cfg_temperature --out reports/cfg_temperature
    pockettts-tools report DIR1 DIR2 --out OUT --baseline cfg_scale=1 --baseline temperature=0.3
    pockettts-tools report DIR --best checkpoint    # print the checkpoint of the lowest WER, write nothing

Every ``results.json`` under the given directories is one row (``pockettts.eval.report``).
``OUT/results.md`` is a markdown table, ``OUT/results.csv`` has every knob and number, and
``OUT/vs_<knob>.png`` plots WER, CER, speaker similarity and quality against each varying knob,
with the baseline (``--baseline``; default CFG 1 when CFG varies, else the first value of the first
varying knob) drawn as a star. Each metric carries its 95% bootstrap interval over items, and every
other result its paired difference from the baseline result on the same items (interval, p-value):
a table column per ``--paired`` metric, every metric in ``OUT/paired.csv``.
"""

from __future__ import annotations

import argparse
import sys

from pockettts.eval.report import (
    PAIRED_METRICS,
    PLOT_METRICS,
    ReportError,
    best_setting,
    build_report,
    collect,
    parse_baseline,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dirs", nargs="+", help="directories searched for results.json (a sweep's root)")
    parser.add_argument(
        "--out", help="where results.md, results.csv and the plots go (required unless --best)"
    )
    parser.add_argument(
        "--best", metavar="KNOB", help="print the KNOB value of the result with the lowest --metric instead"
    )
    parser.add_argument("--metric", default="wer_whisper", help="the error rate --best minimises")
    parser.add_argument(
        "--baseline", action="append", default=None, metavar="KNOB=VALUE",
        help="the baseline setting (repeatable); default cfg_scale=1, else the first knob's first value",
    )  # fmt: skip
    parser.add_argument(
        "--metrics", nargs="+", default=None, help=f"summary keys to plot (default {PLOT_METRICS} + quality)"
    )
    parser.add_argument(
        "--paired", nargs="+", default=PAIRED_METRICS, metavar="METRIC",
        help="summary keys whose paired difference from the baseline gets a table column (default "
        f"{PAIRED_METRICS}; OUT/paired.csv has every metric)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    if args.best is None and args.out is None:
        print("error: --out is required (or --best KNOB)", file=sys.stderr)
        return 2
    try:
        if args.best is not None:
            print(best_setting(collect(args.dirs), args.best, args.metric))
            return 0
        report = build_report(
            args.dirs, args.out, parse_baseline(args.baseline) if args.baseline else None, args.metrics,
            args.paired,
        )  # fmt: skip
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(report["table"])
    print(f"{report['results']} results -> {args.out} (table, CSV, paired CSV, {len(report['plots'])} plots)")
    return 0
