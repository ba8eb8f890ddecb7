"""One table, and plots of every metric against each varying knob, of evaluation results.

    pockettts-tools report logs/eval/sweeps/cfg_temperature --out reports/cfg_temperature
    pockettts-tools report DIR1 DIR2 --out OUT --baseline cfg_scale=1 --baseline temperature=0.3

Every ``results.json`` under the given directories is one row (``pockettts.eval.report``).
``OUT/results.md`` is a markdown table, ``OUT/results.csv`` has every knob and number, and
``OUT/vs_<knob>.png`` plots WER, CER, speaker similarity and quality against each varying knob,
with the baseline (``--baseline``; default CFG 1 when CFG varies, else the first value of the first
varying knob) drawn as a star.
"""

from __future__ import annotations

import argparse
import sys

from pockettts.eval.report import PLOT_METRICS, ReportError, build_report, parse_baseline


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dirs", nargs="+", help="directories searched for results.json (a sweep's root)")
    parser.add_argument("--out", required=True, help="where results.md, results.csv and the plots go")
    parser.add_argument(
        "--baseline", action="append", default=None, metavar="KNOB=VALUE",
        help="the baseline setting (repeatable); default cfg_scale=1, else the first knob's first value",
    )  # fmt: skip
    parser.add_argument(
        "--metrics", nargs="+", default=None, help=f"summary keys to plot (default {PLOT_METRICS} + quality)"
    )


def run(args: argparse.Namespace) -> int:
    try:
        report = build_report(
            args.dirs, args.out, parse_baseline(args.baseline) if args.baseline else None, args.metrics
        )
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(report["table"])
    print(f"{report['results']} results -> {args.out} (table, CSV, {len(report['plots'])} plots)")
    return 0
