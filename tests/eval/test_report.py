"""The sweep report: which knobs vary, the baseline, the table, the CSV and the plots, and a real
two-point CFG sweep through ``eval.py -m +sweep=cfg_temperature`` gathered into its table and plot."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from pockettts.eval.intervals import item_values
from pockettts.eval.report import (
    ReportError,
    _error_bars,
    _series_knobs,
    build_report,
    default_baseline,
    markdown_table,
    parse_baseline,
    varying_knobs,
)
from pockettts.tools.__main__ import main
from tests.support import ROOT, amplify_codec, eval_item_row


def _result(tmp_path: Path, name: str, wer: float, **knobs) -> dict:
    """A results.json as the runner writes it (knobs + summary), at ``tmp_path/name``."""
    base = {"testset": "demo", "checkpoint": "student", "context_noise": 0.0, "cfg_scale": 1.0,
            "temperature": 0.3, "eos_threshold": -4.0, "seed": 0, "asr": "tiny.en",
            "normalizers": ["whisper", "plain"]}  # fmt: skip
    result = {
        "results_dir": str(tmp_path / name),
        "quality_primary": "dnsmos_ovrl",
        "knobs": {**base, **knobs},
        "summary": {
            "items": 4,
            "wer_whisper": wer,
            "mean_wer_plain": wer + 0.01,
            "cer_whisper": wer / 2,
            "sim_prompt": 0.5,
            "sim_reference": None,
            "quality_dnsmos_ovrl": 2.5,
            "quality_dnsmos_sig": 3.0,
            "silent": 0,
            "no_eos": 1,
            "missing": 0,
            "failed": 0,
            "rtf": 0.4,
            "ttfa_seconds": 0.05,
        },  # fmt: skip
    }
    (tmp_path / name).mkdir(parents=True)
    (tmp_path / name / "results.json").write_text(json.dumps(result))
    return result


def _result_with_items(tmp_path: Path, name: str, rows: list[dict], **knobs) -> dict:
    """A results.json with its items.jsonl beside it."""
    result = _result(tmp_path, name, item_values(rows, "wer_whisper").estimate, **knobs)
    (tmp_path / name / "items.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return result


def test_varying_knobs_baseline_and_table(tmp_path):
    results = [
        _result(tmp_path, "a", 0.30, cfg_scale=1.0, temperature=0.3),
        _result(tmp_path, "b", 0.20, cfg_scale=2.0, temperature=0.3),
        _result(tmp_path, "c", 0.25, cfg_scale=1.0, temperature=0.7),
        _result(tmp_path, "d", 0.15, cfg_scale=2.0, temperature=0.7),
    ]
    assert varying_knobs(results) == ["cfg_scale", "temperature"]
    assert default_baseline(results) == {"cfg_scale": "1"}
    table = markdown_table(results, {"cfg_scale": "1"})
    lines = table.splitlines()
    assert lines[0].startswith("Fixed: testset demo, noise level 0, checkpoint student")
    assert lines[2].startswith(
        "| CFG | temp. | items | WER-P % | WER-W % | CER-W % | SIM-o | dnsmos ovrl | silent |"
    )
    assert "SIM-r" not in lines[2]  # no result has a reference similarity
    rows = [line for line in lines if line.startswith(("| 1 |", "| 2 |"))]
    assert len(rows) == 4 and rows[0].split("|")[4].strip() == "31.00"  # WER-P of the first row in %
    assert sum(row.rstrip(" |").endswith("★") for row in rows) == 2  # cfg 1 at both temperatures
    with pytest.raises(ReportError, match="not knob=value"):
        parse_baseline(["cfg_scale"])


def test_checkpoint_and_noise_level_vary_together_as_one_line(tmp_path):
    results = [
        _result(
            tmp_path, f"n{level}", 0.3 - level / 10, checkpoint=f"noise_{level}-teacher", context_noise=level
        )
        for level in (0.0, 0.5, 1.0)
    ]
    varying = varying_knobs(results)
    assert varying == ["context_noise", "checkpoint"]
    assert _series_knobs(results, "context_noise", varying) == []
    assert default_baseline(results) == {"context_noise": "0.0"}  # the no-noise teacher


def test_report_writes_table_csv_and_one_plot_per_varying_knob(tmp_path):
    for cfg, temp, wer in [(1.0, 0.3, 0.3), (2.0, 0.3, 0.2), (1.0, 0.7, 0.35), (2.0, 0.7, 0.25)]:
        _result(tmp_path / "sweep", f"cfg{cfg}-t{temp}", wer, cfg_scale=cfg, temperature=temp)
    report = build_report([tmp_path / "sweep"], tmp_path / "out", parse_baseline(["cfg_scale=1"]))
    assert report["results"] == 4
    assert sorted(p.name for p in report["plots"]) == ["vs_cfg_scale.png", "vs_temperature.png"]
    for plot in report["plots"]:
        with Image.open(plot) as image:
            assert image.size[0] > 1000 and image.size[1] > 600  # 5 panels (4 metrics + quality): 2 rows
    with open(report["csv"]) as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["cfg_scale"], r["temperature"], r["baseline"]) for r in rows] == [
        ("1", "0.3", "True"), ("1", "0.7", "True"), ("2", "0.3", "False"), ("2", "0.7", "False")
    ]  # fmt: skip
    assert rows[0]["wer_whisper"] == "0.3" and rows[0]["normalizers"] == "whisper+plain"


def test_report_shows_intervals_and_paired_differences_from_the_baseline_at_the_same_temperature(tmp_path):
    sweep = tmp_path / "sweep"
    # word errors i % 3 (+ extra) in 10 words: WER 10% (+ extra * 10%); one item of the last run failed
    for cfg, temp, extra, count in [
        (1.0, 0.3, 0, 48),
        (2.0, 0.3, 2, 48),
        (1.0, 0.7, 1, 48),
        (2.0, 0.7, 1, 47),
    ]:
        rows = [eval_item_row(f"i{i}", i % 3 + extra, 10) for i in range(count)]
        _result_with_items(sweep, f"cfg{cfg}-t{temp}", rows, cfg_scale=cfg, temperature=temp)
    report = build_report([sweep], tmp_path / "out", parse_baseline(["cfg_scale=1"]))
    lines = (tmp_path / "out" / "results.md").read_text().splitlines()
    header = [cell.strip() for cell in lines[2].strip("|").split("|")]
    assert header[-2:] == ["ΔWER-W % vs baseline [CI], p", "baseline"]
    cells = {
        (row[0], row[1]): row
        for row in ([c.strip() for c in line.strip("|").split("|")] for line in lines[4:8])
    }  # fmt: skip
    wer = header.index("WER-W %")
    assert cells["1", "0.3"][wer].startswith("10.00 [") and cells["1", "0.3"][-2] == "–"
    # each compared with CFG 1 at its own temperature: +20 points at 0.3, none at 0.7 (on 47 items)
    assert cells["2", "0.3"][-2] == "+20.00 [+20.00, +20.00], p<0.001"
    assert cells["2", "0.7"][-2] == "+0.00 [+0.00, +0.00], p=1.000, 47 items"
    assert "95% bootstrap interval over items" in "\n".join(lines)
    with open(report["paired"]) as handle:
        paired = {(r["cfg_scale"], r["temperature"], r["metric"]): r for r in csv.DictReader(handle)}
    assert len(paired) == 2 * 5  # two non-baseline runs x WER-P, WER-W, CER-W, SIM-o, quality
    late = paired["2", "0.7", "wer_whisper"]
    assert (late["items"], late["dropped"], Path(late["baseline_dir"]).name) == ("47", "1", "cfg1.0-t0.7")
    with open(report["csv"]) as handle:
        first = next(csv.DictReader(handle))
    assert (
        float(first["wer_whisper_ci_low"]) < float(first["wer_whisper"]) < float(first["wer_whisper_ci_high"])
    )
    # the plots' error bars: the interval's extent below and above each point, none without one
    points = [({"summary": {"wer_whisper_ci": [0.1, 0.25]}}, 0.2), ({"summary": {}}, 0.5)]
    assert _error_bars(points, "wer_whisper", 100) == [[pytest.approx(10), 0], [pytest.approx(5), 0]]


def test_cli_errors_name_the_problem(tmp_path, capsys):
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "out")]) == 1
    assert "no results.json" in capsys.readouterr().err
    _result(tmp_path, "a", 0.3)
    _result(tmp_path, "b", 0.2, cfg_scale=2.0)
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "out"), "--baseline", "cfg=1"]) == 1
    assert "baseline knob 'cfg' is not a knob" in capsys.readouterr().err
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "out"), "--baseline", "cfg_scale=3"]) == 1
    assert "no result has the baseline setting" in capsys.readouterr().err


def test_best_prints_the_knob_of_the_lowest_error_rate_and_writes_nothing(tmp_path, capsys):
    _result(tmp_path, "a", 0.30, checkpoint="noise_none", cfg_scale=2.0)
    _result(tmp_path, "b", 0.20, checkpoint="noise_calm", cfg_scale=1.5)
    _result(tmp_path, "c", 0.25, checkpoint="noise_calm", cfg_scale=2.0)
    assert main(["report", str(tmp_path), "--best", "checkpoint"]) == 0
    assert capsys.readouterr().out.strip() == "noise_calm"
    assert main(["report", str(tmp_path), "--best", "cfg_scale", "--metric", "mean_wer_plain"]) == 0
    assert capsys.readouterr().out.strip() == "1.5"
    assert main(["report", str(tmp_path), "--best", "cfg"]) == 1
    assert "'cfg' is not a knob" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2  # neither --out nor --best
    assert not any(tmp_path.rglob("results.md"))


def test_two_point_cfg_sweep_through_eval_py_gives_its_table_and_plot(tts, tiny_en, meta, tmp_path):
    amplify_codec(tmp_path / "export" / "vae.safetensors")
    command = [
        sys.executable, str(ROOT / "eval.py"), "-m", "+sweep=cfg_temperature", "sampling.cfg_scale=1,2",
        "sampling.temperature=0.3",
        f"checkpoint={tmp_path / 'export' / 'flow_lm.safetensors'}", "testset=seed_tts",
        f"testset_options.meta_path={meta}", f"whisper={tiny_en[0]}", "max_items=1", "quality_scorer=null",
        f"paths.log_dir={tmp_path / 'logs'}", f"hydra.sweep.dir={tmp_path / 'multirun'}",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = tmp_path / "logs" / "eval" / "sweeps" / "cfg_temperature"
    assert len(list(sweep.rglob("results.json"))) == 2  # the command line replaced the 4 x 4 grid
    assert main(["report", str(sweep), "--out", str(tmp_path / "report")]) == 0
    table = (tmp_path / "report" / "results.md").read_text().splitlines()
    rows = [line for line in table if line.startswith("| 1 |") or line.startswith("| 2 |")]
    assert len(rows) == 2 and rows[0].endswith("★ |") and not rows[1].endswith("★ |")
    assert table[2].startswith("| CFG | items | WER-P % |")
    with Image.open(tmp_path / "report" / "vs_cfg_scale.png") as image:
        assert image.size[0] > 1000
    assert not (tmp_path / "report" / "vs_temperature.png").exists()  # temperature did not vary
