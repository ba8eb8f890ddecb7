"""The table of recipes/at_size/run.sh: per stage, seconds per step, peak memory, checkpoint size,
and whether the run killed after its step-2 checkpoint and resumed logged what the uninterrupted
run logged and exported the same weights.

    .venv/bin/python recipes/at_size/report.py RUNS   # exit status 1 if a resumed run differs

RUNS holds one folder per stage: ``straight/`` (the uninterrupted run's directory), ``crashed/``
(the killed run's, resumed in place), and ``/usr/bin/time -v`` reports ``straight.time`` and
``resumed.time``; ``infer/`` and ``eval/`` hold ``run.time``.
"""

from __future__ import annotations

import csv
import re
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

STAGES = (
    "vae", "teacher", "teacher_consistency", "teacher_calm", "student", "light_decoder_18m", "teacher_18m",
    "teacher_7m", "teacher_2m", "student_18m", "student_2m",
)  # fmt: skip
CHECKPOINT_STEP = 2  # the crashed run is killed once this step's checkpoint is written
GIB = 2**30


def peak_rss(time_report: Path) -> int | None:
    """Bytes of ``/usr/bin/time -v``'s maximum resident set size (None: no report)."""
    if not time_report.is_file():
        return None
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", time_report.read_text())
    return int(match.group(1)) * 1024 if match else None


def wall_seconds(time_report: Path) -> float | None:
    """``/usr/bin/time -v``'s elapsed wall-clock time ([h:]mm:ss.ss) in seconds."""
    if not time_report.is_file():
        return None
    match = re.search(r"Elapsed \(wall clock\) time.*: ([\d:.]+)", time_report.read_text())
    if not match:
        return None
    seconds = 0.0
    for part in match.group(1).split(":"):
        seconds = 60 * seconds + float(part)
    return seconds


def step_seconds(run_dir: Path) -> tuple[float, int] | None:
    """Mean seconds of a training batch and their count, from the SimpleProfiler's report."""
    report = run_dir / "fit-profile.txt"
    if not report.is_file():
        return None
    match = re.search(r"\|\s+run_training_batch\s+\|\s+([\d.e-]+)\s+\|\s+(\d+)", report.read_text())
    return (float(match.group(1)), int(match.group(2))) if match else None


def logged_values(run_dir: Path) -> dict[int, dict[str, str]]:
    """step -> every metric logged at it (training, validation, learning rates), from metrics.csv."""
    rows: dict[int, dict[str, str]] = {}
    path = run_dir / "csv" / "metrics.csv"
    if not path.is_file():
        return rows
    for row in csv.DictReader(path.open()):
        values = {k: v for k, v in row.items() if k not in ("step", "epoch") and v}
        rows.setdefault(int(float(row["step"])), {}).update(values)
    return rows


def resume_differences(straight: Path, resumed: Path) -> list[str]:
    """Where the killed-and-resumed run's logged values or exported weights differ from the
    uninterrupted run's (empty: bit-identical)."""
    before, after = logged_values(straight), logged_values(resumed)
    differences = []
    for step in sorted(before.keys() | after.keys()):
        for key in sorted(before.get(step, {}).keys() | after.get(step, {}).keys()):
            ours, theirs = before.get(step, {}).get(key), after.get(step, {}).get(key)
            if ours != theirs:
                differences.append(f"step {step} {key}: {theirs} resumed, {ours} uninterrupted")
    for exported in sorted((straight / "export").glob("*.safetensors")):
        ours, theirs = load_file(exported), load_file(resumed / "export" / exported.name)
        differences += [
            f"export {exported.name}: {name} differs"
            for name in sorted(ours.keys() | theirs.keys())
            if name not in ours or name not in theirs or not torch.equal(ours[name], theirs[name])
        ]
    return differences


def first_loss_after_checkpoint(run_dir: Path) -> str:
    """The loss of the first step after the checkpoint step (the first the resumed process took)."""
    losses = [v["train/loss"] for _, v in sorted(logged_values(run_dir).items()) if "train/loss" in v]
    return losses[CHECKPOINT_STEP] if len(losses) > CHECKPOINT_STEP else "-"


def gib(value: int | None) -> str:
    return "-" if value is None else f"{value / GIB:.1f}"


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def stage_row(runs: Path, stage: str) -> tuple[list[str], list[str]]:
    """The table row of one stage and the resume differences found (none when not checked)."""
    folder = runs / stage
    straight, crashed = folder / "straight", folder / "crashed"
    step = step_seconds(straight)
    checkpoint = crashed / "checkpoints" / "last.ckpt"
    differences = resume_differences(straight, crashed) if crashed.is_dir() else []
    resume = "-"
    if crashed.is_dir():
        resume = f"equal ({first_loss_after_checkpoint(crashed)})" if not differences else "DIFFERS"
    row = [
        stage,
        "-" if step is None else f"{step[0]:.2f} (x{step[1]})",
        gib(peak_rss(folder / "straight.time")),
        gib(peak_rss(folder / "resumed.time")),
        gib(checkpoint.stat().st_size) if checkpoint.is_file() else "-",
        seconds(wall_seconds(folder / "straight.time")),
        resume,
    ]
    return row, differences


def print_table(rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)))


def main(runs: Path) -> int:
    header = [
        "stage", "s/step (steps)", "peak RSS GiB", "resumed RSS GiB", "checkpoint GiB", "wall s",
        f"resume: step {CHECKPOINT_STEP + 1} loss",
    ]  # fmt: skip
    rows, failures = [header], []
    for stage in STAGES:
        if (runs / stage).is_dir():
            row, differences = stage_row(runs, stage)
            rows.append(row)
            failures += [f"{stage}: {d}" for d in differences]
    for task in ("infer", "eval"):
        report = runs / task / "run.time"
        if report.is_file():
            rows.append([task, "-", gib(peak_rss(report)), "-", "-", seconds(wall_seconds(report)), "-"])
    print_table(rows)
    for failure in failures:
        print(failure)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
