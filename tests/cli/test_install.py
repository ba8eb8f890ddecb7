"""The install contract: ``pip install pockettts`` trains and speaks, the eval extra adds scoring.

The built wheel carries the config tree and every data file read at run time, installs the six
console commands, and asks for the evaluation models only under the ``eval`` extra. In a venv that
sees this one's packages except those models, every training and inference module imports,
``infer.py`` speaks with the shipped student, and ``eval.py`` stops with the command that installs
them. (The real thing, a fresh venv with ``pip install -e .`` alone, downloads torch: too slow for
CI; the README records it.)
"""

from __future__ import annotations

import email
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from pockettts.extras import EVAL_MODULES
from tests.support import ROOT, write_tone

PACKAGE = ROOT / "pockettts"
STUDENT = ROOT / "recipes" / "tiny" / "checkpoints" / "student.safetensors"
CONSOLE_SCRIPTS = {
    "pockettts-train", "pockettts-distill", "pockettts-eval", "pockettts-infer", "pockettts-data",
    "pockettts-tools",
}  # fmt: skip
# Everything that must import without the eval extra: all but the scoring code and its tools.
WITHOUT_EVAL = ("pockettts.training", "pockettts.models", "pockettts.modules", "pockettts.data",
                "pockettts.losses", "pockettts.compat")  # fmt: skip


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    """The wheel of a copy of the project (building in place would leave build/ in the clone)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "src"
    shutil.copytree(PACKAGE, source / "pockettts", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp),
         str(source)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return zipfile.ZipFile(next(tmp.glob("pockettts-*.whl")))


def _dist_info(wheel: zipfile.ZipFile, name: str) -> str:
    return wheel.read(next(n for n in wheel.namelist() if n.endswith(f".dist-info/{name}"))).decode()


def test_the_wheel_carries_the_configs_and_every_data_file(wheel):
    packaged = set(wheel.namelist())
    data_files = [
        p.relative_to(ROOT).as_posix()
        for p in PACKAGE.rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
    ]
    assert "pockettts/configs/train.yaml" in data_files and "pockettts/data/demo_sentences.txt" in data_files
    assert sorted(set(data_files) - packaged) == []


def test_the_wheel_installs_the_console_commands(wheel):
    entry_points = _dist_info(wheel, "entry_points.txt")
    installed = {line.split("=")[0].strip() for line in entry_points.splitlines() if "=" in line}
    assert installed == CONSOLE_SCRIPTS


def test_evaluation_models_are_only_in_the_eval_extra(wheel):
    requires = email.message_from_string(_dist_info(wheel, "METADATA")).get_all("Requires-Dist")
    base = {r.split(";")[0] for r in requires if "extra ==" not in r}
    eval_extra = {r.split(";")[0] for r in requires if 'extra == "eval"' in r}

    def names(requirements):
        return {r.split("=")[0].split("<")[0].split(">")[0].strip().lower() for r in requirements}

    assert not names(base) & set(EVAL_MODULES.values())
    assert names(eval_extra) >= set(EVAL_MODULES.values())
    assert "setuptools" not in names(base)
    assert {"torch", "torchaudio", "lightning", "hydra-core"} <= names(base)


@pytest.fixture(scope="module")
def python_without_eval(tmp_path_factory) -> Path:
    """The python of a venv that sees this one's packages except the eval extra's distributions
    (modules and metadata, as after ``pip install -e .``: torchmetrics, for one, imports librosa
    whenever its metadata is there)."""
    venv = tmp_path_factory.mktemp("without_eval") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    target = Path(subprocess.run([python, "-c", purelib], capture_output=True, text=True).stdout.strip())
    hidden = {
        file.parts[0]
        for dist in EVAL_MODULES.values()
        for file in importlib.metadata.distribution(dist).files
        if file.parts[0] not in ("..", "__pycache__")
    }
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if entry.name not in hidden:
            (target / entry.name).symlink_to(entry)
    return python


def _run(python: Path, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline"}
    return subprocess.run([str(python), *args], capture_output=True, text=True, env=env, cwd=cwd)


def test_the_venv_without_eval_hides_the_eval_extra(python_without_eval, tmp_path):
    assert all(importlib.util.find_spec(m) for m in EVAL_MODULES), "the eval extra is installed here"
    result = _run(python_without_eval, ["-c", "import resemblyzer"], tmp_path)
    assert result.returncode != 0 and "No module named 'resemblyzer'" in result.stderr


def test_training_and_inference_import_without_the_eval_extra(python_without_eval, tmp_path):
    script = (
        "import importlib, pkgutil, sys\n"
        "import pockettts\n"
        "from pockettts import TextToSpeech\n"
        "import pockettts.cli.train, pockettts.cli.distill, pockettts.cli.infer, pockettts.cli.data\n"
        f"for package in {WITHOUT_EVAL!r}:\n"
        "    root = importlib.import_module(package)\n"
        "    for info in pkgutil.walk_packages(root.__path__, package + '.'):\n"
        "        if not info.name.endswith('__main__'):\n"
        "            importlib.import_module(info.name)\n"
        "print('imported', len([m for m in sys.modules if m.startswith('pockettts')]))\n"
    )
    result = _run(python_without_eval, ["-c", script], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]


def test_infer_py_speaks_with_the_shipped_student_without_the_eval_extra(python_without_eval, tmp_path):
    voice = write_tone(tmp_path / "voice.wav", seconds=2.0, sample_rate=24000, freq=180.0)
    out = tmp_path / "hello.wav"
    result = _run(
        python_without_eval,
        [str(ROOT / "infer.py"), f"checkpoint={STUDENT}", f"voice={voice}", "text=Hello there.",
         f"out={out}", f"hydra.run.dir={tmp_path / 'hydra'}"],
        tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert out.stat().st_size > 1000


def test_eval_py_names_the_missing_extra(python_without_eval, tmp_path):
    result = _run(
        python_without_eval,
        [str(ROOT / "eval.py"), f"checkpoint={STUDENT}", f"hydra.run.dir={tmp_path / 'hydra'}"],
        tmp_path,
    )
    assert result.returncode != 0
    assert "pip install 'pockettts[eval]'" in result.stderr and "resemblyzer" in result.stderr
