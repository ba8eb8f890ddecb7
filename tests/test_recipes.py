"""The recipes under recipes/ are valid bash, and every command they run would start: each Hydra
command (train.py, distill.py, eval.py) composes with Hydra's compose API, each
``python -m pockettts.data`` command parses, and each other ``python -m`` module exists.

The commands are the ones the scripts really run: each script is executed with ``DRY_RUN=1``
(recipes/common.sh then prints every command, shell-quoted, instead of running it) under the
settings the recipes document, so variables and loops are expanded exactly as in a real run.
Nothing is trained.
"""

from __future__ import annotations

import importlib.util
import shlex
import subprocess
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser

from pockettts.cli.data import build_parser
from pockettts.schema import register_schemas
from tests.support import CONFIG_DIR, ROOT, dry_run

RECIPES = ROOT / "recipes"
ENTRY_POINTS = {"train.py": "train", "distill.py": "distill", "eval.py": "eval", "infer.py": "infer"}
# The scripts that run the recipes, and the settings they document (one dry run each).
DRY_RUNS = [
    ("libritts_r/run.sh", [], {}),
    ("libritts_r/run.sh", [], {"SIZE": "tiny"}),
    ("libritts_r/run.sh", [], {"VAE": "vae.safetensors", "TRAINER": "multinode", "MAX_ITEMS": "100"}),
    ("hifitts2/run.sh", [], {}),
    ("hifitts2/run.sh", [], {"SIZE": "tiny", "VAE_FROM": "released"}),
    ("finetune_language/run.sh", [], {}),
    ("finetune_language/run.sh", [], {"SIZE": "tiny"}),
    ("ablations/run.sh", [], {}),
    ("ablations/run.sh", [], {"SIZE": "tiny"}),
    ("ablations/run.sh", [], {"SIZE": "demo"}),
    ("tiny/demo_checkpoints.sh", [], {}),
    ("tiny/small_student.sh", [], {}),
    ("at_size/run.sh", [], {}),
    ("slurm/train.sbatch", ["train.py", "experiment=teacher_300m", "data.data_dir=d", "data.vae=v"], {}),
    ("slurm/train.sbatch", ["distill.py", "experiment=student_100m", "teacher=t.safetensors"], {}),
    ("slurm/train.sbatch", ["recipes/hifitts2/run.sh"], {"STAGES": "teacher student"}),
]  # fmt: skip


def recipe_scripts() -> list[Path]:
    return sorted(p for p in RECIPES.rglob("*") if p.suffix in (".sh", ".sbatch"))


@pytest.mark.parametrize("script", recipe_scripts(), ids=lambda p: str(p.relative_to(RECIPES)))
def test_script_is_valid_bash(script):
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_every_recipe_directory_has_a_readme_and_is_dry_run():
    tested = {script.split("/")[0] for script, _, _ in DRY_RUNS}
    for folder in ("libritts_r", "hifitts2", "slurm", "finetune_language", "ablations"):
        assert (RECIPES / folder / "README.md").is_file(), folder
        assert folder in tested, folder


def first_of_each_sweep(overrides: list[str]) -> list[str]:
    """A multirun's overrides with every sweep (``a=1,2``) replaced by its first value."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    out = []
    for text, override in zip(overrides, parsed):
        if override.is_sweep_override():
            first = next(override.sweep_string_iterator())
            out.append(f"{override.get_key_element()}={first}")
        else:
            out.append(text)
    return out


def compose_command(config_name: str, overrides: list[str], multirun: bool) -> None:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name, overrides=first_of_each_sweep(overrides), return_hydra_config=True)
    assert cfg.task_name
    if multirun:
        # The launching process resolves the sweep directory before Hydra's runtime exists.
        assert cfg.hydra.sweep.dir


def check_command(command: list[str], where: str) -> str:
    """Check one command; returns what kind it was."""
    scripts = [i for i, token in enumerate(command) if Path(token).name in ENTRY_POINTS]
    if scripts:
        i = scripts[0]
        overrides = [t for t in command[i + 1 :] if not t.startswith("-")]
        try:
            compose_command(ENTRY_POINTS[Path(command[i]).name], overrides, multirun="-m" in command[i + 1 :])
        except Exception as err:  # noqa: BLE001 - name the command in the failure
            pytest.fail(f"{where}: `{shlex.join(command)}` does not compose: {err}")
        return "hydra"
    if "-m" in command:
        module = command[command.index("-m") + 1]
        argv = command[command.index("-m") + 2 :]
        if module == "pockettts.data":
            try:
                build_parser().parse_args(argv)
            except SystemExit:
                pytest.fail(f"{where}: `{shlex.join(command)}` does not parse")
            return "data"
        assert importlib.util.find_spec(module) is not None, f"{where}: no module {module}"
        return "module"
    return "other"


def _dry_run_id(case: tuple) -> str:
    script, args, env = case
    return "-".join([script, *args[:1], *(f"{k}={v}" for k, v in env.items())])


@pytest.mark.parametrize("script, args, env", DRY_RUNS, ids=[_dry_run_id(c) for c in DRY_RUNS])
def test_recipe_commands_compose(script, args, env):
    register_schemas()
    kinds = [check_command(command, f"{script} {env}") for command in dry_run(script, args, env)]
    assert "hydra" in kinds
