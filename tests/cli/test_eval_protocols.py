"""``protocol=<name>`` on eval.py: the settings of published evaluations compose over the defaults,
each value cites where it comes from, and the command line still has the last word."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf, open_dict

from pockettts.schema import EvalConfig, register_schemas
from tests.support import CONFIG_DIR

PROTOCOLS = Path(CONFIG_DIR) / "protocol"
# the knobs published numbers depend on, per protocol (sources in the yaml files)
EXPECTED = {
    "librispeech_pc": dict(
        testset="librispeech_pc", whisper="large-v3", language="en", beam_size=5, loop_guard=True,
        temperature=0.3, head_steps=1, eos_threshold=-1.0, normalizers=["whisper", "plain"],
        speaker_embedder="wavlm_ecapa", speaker_checkpoint="checkpoints/wavlm_large_finetune.pth",
        quality_scorer="utmos", quality_checkpoint="checkpoints/utmos_scripted.pt",
    ),
    "seed_tts": dict(
        testset="seed_tts", whisper="large-v3", language="en", beam_size=None, loop_guard=False,
        temperature=0.3, head_steps=1, eos_threshold=-1.0, normalizers=["whisper", "plain"],
        speaker_embedder="wavlm_ecapa", speaker_checkpoint="checkpoints/wavlm_large_finetune.pth",
        quality_scorer="dnsmos", quality_checkpoint=None,
    ),
    "demo": dict(
        testset="demo", whisper="checkpoints/whisper/tiny.en.pt", language="en", beam_size=None,
        loop_guard=False, temperature=0.3, head_steps=1, eos_threshold=-1.0, normalizers=["whisper", "plain"],
        speaker_embedder="resemblyzer", speaker_checkpoint=None,
        quality_scorer="dnsmos", quality_checkpoint=None,
    ),
}  # fmt: skip


def eval_config(*overrides: str) -> EvalConfig:
    register_schemas()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("eval", overrides=["checkpoint=model.safetensors", *overrides])
    with open_dict(cfg):  # outside a Hydra run there is no runtime directory to resolve them against
        cfg.paths.root_dir = cfg.paths.output_dir = "."
    return OmegaConf.to_object(cfg)


def knobs(cfg: EvalConfig) -> dict:
    sampling = {k: getattr(cfg.sampling, k) for k in ("temperature", "head_steps", "eos_threshold")}
    keys = EXPECTED["demo"].keys() - sampling.keys()
    return {**{k: getattr(cfg, k) for k in keys}, **sampling}


def test_every_protocol_is_tested():
    assert sorted(p.stem for p in PROTOCOLS.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_protocol_sets_the_published_settings(name):
    cfg = eval_config(f"protocol={name}")
    assert knobs(cfg) == EXPECTED[name]
    assert cfg.sampling.cfg_scale == 1.0  # per model: the protocol leaves it to the command line


def test_the_command_line_overrides_a_protocol():
    cfg = eval_config("protocol=librispeech_pc", "sampling.cfg_scale=2.0", "speaker_embedder=resemblyzer",
                      "speaker_checkpoint=null", "sampling.eos_threshold=-4")  # fmt: skip
    assert (cfg.sampling.cfg_scale, cfg.sampling.eos_threshold) == (2.0, -4.0)
    assert (cfg.speaker_embedder, cfg.speaker_checkpoint, cfg.whisper) == ("resemblyzer", None, "large-v3")


def test_without_a_protocol_the_defaults_stay():
    assert knobs(eval_config())["eos_threshold"] == -4.0  # pocket-tts's inference default


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_protocol_value_cites_its_source_or_says_it_is_a_guess(name):
    for line in (PROTOCOLS / f"{name}.yaml").read_text().splitlines():
        key, _, value = line.partition(":")
        if line.startswith("#") or not value.split("#")[0].strip():
            continue  # comments and the headers of nested keys
        comment = value.partition("#")[2]
        assert re.search(r"\[[A-Z0-9, ]+\]|guess", comment), f"{name}.yaml: {key.strip()} has no source"
