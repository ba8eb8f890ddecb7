"""``debug=at_size`` runs each stage with its real model and shrinks only its steps and rows: the
training commands recipes/at_size/run.sh runs (printed by a dry run) compose with Hydra, their model
nodes equal the experiment's without the preset, and their steps, rows and precision are those of
a few bf16 steps on a CPU."""

from __future__ import annotations

import functools

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from pockettts.schema import register_schemas
from tests.support import CONFIG_DIR, dry_run

ENTRY_POINTS = {"train.py": "train", "distill.py": "distill"}
VAE_ROWS = ("batch_size", "crop_seconds", "valid_crop_seconds")
TTS_ROWS = ("max_batch_size", "max_frames", "cut.max_target_sec")
# The experiment (and ablation) of each stage: the data fields that set its rows, and whether it is
# killed and resumed (three runs) or run once for 2 steps.
STAGES = {
    ("vae_speech", None): (VAE_ROWS, True),
    ("teacher_300m", None): (TTS_ROWS, True),
    ("teacher_300m", "head_consistency"): (TTS_ROWS, False),
    ("teacher_calm_300m", None): (TTS_ROWS, False),
    ("student_100m", None): (TTS_ROWS, True),
    ("vae_light_decoder_18m", None): (VAE_ROWS, False),
    ("teacher_18m", None): (TTS_ROWS, False),
    ("teacher_7m", None): (TTS_ROWS, False),
    ("teacher_2m", None): (TTS_ROWS, False),
    ("student_18m", None): (TTS_ROWS, False),
    ("student_2m", None): (TTS_ROWS, False),
}
# The model fields the recipe sets: where WavLM's weights are, the codec a light decoder starts from.
RECIPE_FIELDS = {"vae_speech": ("ssl_teacher", "checkpoint"), "vae_light_decoder_18m": ("init_from",)}


def _compose(entry: str, overrides: list[str]) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(entry, overrides=overrides)


def _training_commands() -> list[tuple[str, list[str]]]:
    """(entry config, overrides) of every train.py / distill.py command of the recipe."""
    commands = []
    for command in dry_run("at_size/run.sh", [], {}):
        scripts = [i for i, token in enumerate(command) if token in ENTRY_POINTS]
        if scripts:
            commands.append((ENTRY_POINTS[command[scripts[0]]], command[scripts[0] + 1 :]))
    return commands


def _option(overrides: list[str], key: str) -> str | None:
    return next((o.split("=", 1)[1] for o in overrides if o.startswith(f"{key}=")), None)


@pytest.fixture(scope="module")
def commands() -> list[tuple[str, list[str]]]:
    register_schemas()
    return _training_commands()


@pytest.mark.parametrize("experiment, ablation", list(STAGES), ids=lambda v: v or "")
def test_at_size_keeps_the_model_and_shrinks_steps_and_rows(commands, experiment, ablation):
    runs = [
        (entry, overrides)
        for entry, overrides in commands
        if _option(overrides, "experiment") == experiment and _option(overrides, "ablation") == ablation
    ]
    fields, resumed = STAGES[experiment, ablation]
    # the uninterrupted run, the killed one and its resumption (or one run)
    assert len(runs) == (3 if resumed else 1)
    for entry, overrides in runs:
        assert "debug=at_size" in overrides
        at_size = _compose(entry, overrides)
        preset = _compose(
            entry, [f"experiment={experiment}"] + ([f"ablation={ablation}"] if ablation else [])
        )
        model, reference = (OmegaConf.to_container(c.model) for c in (at_size, preset))
        if experiment in RECIPE_FIELDS:
            *parents, field = RECIPE_FIELDS[experiment]
            for node in (model, reference):
                del functools.reduce(dict.__getitem__, parents, node)[field]
        assert model == reference
        assert at_size.trainer.max_steps < preset.trainer.max_steps
        assert at_size.trainer.precision == "bf16-mixed" and at_size.trainer.accelerator == "cpu"
        for field in fields:
            assert OmegaConf.select(at_size.data, field) < OmegaConf.select(preset.data, field), field
    if resumed:  # the killed run and its resumption checkpoint every 2 steps
        entry, killed = next(run for run in runs if "callbacks.model_checkpoint=null" not in run[1])
        assert _compose(entry, killed).callbacks.model_checkpoint.every_n_train_steps == 2


def test_at_size_keeps_the_real_shapes():
    """What "real size" means here, beyond equality with the presets (which could shrink too)."""
    register_schemas()
    teacher = _compose("train", ["experiment=teacher_300m", "debug=at_size"]).model.model
    assert (teacher.d_model, teacher.num_layers, teacher.num_heads, teacher.latent_dim) == (1024, 24, 16, 32)
    vae = _compose("train", ["experiment=vae_speech", "debug=at_size"]).model.vae
    assert (vae.latent_dim, vae.transformer.d_model, vae.seanet.n_filters) == (32, 512, 64)
    student = _compose("distill", ["experiment=student_100m", "debug=at_size", "teacher=t"]).model
    assert student.num_layers == 6
