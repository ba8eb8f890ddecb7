"""Parity with Kyutai's ``pocket-tts`` package: its codec, built from its own configs with random
weights, and ours after conversion give the same latents and the same audio."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from pockettts.compat.mimi import (
    load_mimi_codec,
    mimi_to_vae_state_dict,
    vae_config_from_mimi,
    vae_to_mimi_state_dict,
)
from pockettts.models.vae import AudioVAE, load_vae
from pockettts.tools.__main__ import main as tools_main

pocket_tts = pytest.importorskip("pocket_tts", reason="parity needs the pocket-tts test dependency")
from pocket_tts.models.mimi import build_mimi  # noqa: E402
from pocket_tts.modules.stateful_module import init_states  # noqa: E402
from pocket_tts.utils.config import CONFIGS_DIR, load_config  # noqa: E402


def _reference_codec(config_name: str, seed: int = 0):
    config = load_config(CONFIGS_DIR / f"{config_name}.yaml")
    torch.manual_seed(seed)
    mimi = build_mimi(config.mimi).eval()
    with torch.no_grad():  # default init leaves LayerScale tiny; make every weight matter
        for name, param in mimi.named_parameters():
            if name.endswith("scale"):
                param.uniform_(0.5, 1.0)
    for name, module in mimi.named_modules():
        module._module_absolute_name = name  # what pocket-tts's TTSModel stamps on its modules
    return mimi, config.mimi.model_dump()


def _audio(frames: int, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    t = torch.arange(frames * 1920) / 24_000
    tone = 0.3 * torch.sin(2 * torch.pi * 220 * t) * torch.sin(2 * torch.pi * 1.3 * t)
    return (tone + 0.05 * torch.randn(2, 1, t.numel(), generator=generator)).float()


@pytest.mark.parametrize("config_name", ["english", "english_2026-01", "english_2m_refl_2026-10"])
def test_converted_codec_matches_reference(config_name, tmp_path):
    reference, mimi_config = _reference_codec(config_name)
    path = tmp_path / "model.safetensors"
    save_file({f"mimi.{k}": v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    ours = load_mimi_codec(path, mimi_config)
    audio = _audio(frames=20)
    with torch.no_grad():
        # What the reference encodes is what its FlowLM reads: the latent (v2), 512-d features (v1).
        expected_features = reference.encode_to_latent(audio)
        features = ours.voice_features(audio, expected_features.shape[-1])
        torch.testing.assert_close(features, expected_features, atol=1e-4, rtol=1e-4)
        latent = torch.randn(2, 20, 32, generator=torch.Generator().manual_seed(1))
        expected_audio = reference.decode_from_latent(latent, init_states(reference, 2, 16 * latent.shape[1]))
        torch.testing.assert_close(ours.decode(latent), expected_audio, atol=1e-4, rtol=1e-4)
    if config_name == "english_2026-01":
        with pytest.raises(RuntimeError, match="v1"):
            ours.encode(audio)


def test_our_vae_runs_in_reference_package():
    reference, mimi_config = _reference_codec("english")
    torch.manual_seed(3)
    ours = AudioVAE(**{**vae_config_from_mimi(mimi_config), "weight_norm": True}).eval()
    with torch.no_grad():  # move weight-norm gains off their init so folding is exercised
        for name, param in ours.named_parameters():
            if name.endswith("original0"):
                param.mul_(1.5)
    exported = {k.removeprefix("mimi."): v for k, v in vae_to_mimi_state_dict(ours).items()}
    reference.load_state_dict(exported, strict=True)
    audio = _audio(frames=12, seed=5)
    with torch.no_grad():
        torch.testing.assert_close(
            reference.encode_to_latent(audio), ours.encode(audio), atol=1e-4, rtol=1e-4
        )
        latent = ours.encode(audio)
        decoded = reference.decode_from_latent(latent, init_states(reference, 2, 16 * latent.shape[1]))
        torch.testing.assert_close(decoded, ours.decode(latent), atol=1e-4, rtol=1e-4)


def test_training_layout_with_weight_norm_folds_to_same_weights():
    """Kyutai's codec training checkpoints store weight_g/weight_v and nested conv names."""
    reference, mimi_config = _reference_codec("english")
    plain = reference.state_dict()
    training_layout: dict[str, torch.Tensor] = {}
    for name, tensor in plain.items():
        if name.endswith((".conv.weight", ".convtr.weight")):
            leaf = name.split(".")[-2]
            stem = "model." + name.removesuffix(".weight") + f".{leaf}"  # Mimi's extra NormConv level
            if name.startswith(("encoder.", "decoder.")):
                training_layout[f"{stem}.weight_g"] = tensor.norm(dim=(1, 2), keepdim=True)
                training_layout[f"{stem}.weight_v"] = tensor * 3.0  # any scale of v folds to the same weight
            else:
                training_layout[f"{stem}.weight"] = tensor
        else:
            training_layout[
                "model." + name.replace(".self_attn.in_proj.weight", ".self_attn.in_proj_weight")
            ] = tensor
    training_layout["model.wavlm_proj.weight"] = torch.zeros(3, 3)  # training-only head: dropped
    converted = mimi_to_vae_state_dict(training_layout)
    for name, tensor in plain.items():
        torch.testing.assert_close(converted[name.replace(".output_projs.0.", ".output_proj.")], tensor)
    assert "wavlm_proj.weight" not in converted
    vae = AudioVAE(**vae_config_from_mimi(mimi_config))
    vae.load_inference_state_dict(converted, strict=False)


def test_mismatched_config_is_named(tmp_path):
    reference, _ = _reference_codec("english")
    _, small_config = _reference_codec("english_2m_refl_2026-10")
    path = tmp_path / "model.safetensors"
    save_file({f"mimi.{k}": v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    with pytest.raises((KeyError, RuntimeError), match="model.safetensors|size mismatch"):
        load_mimi_codec(path, small_config)


def _import_codec(config_name: str, folder) -> tuple[torch.nn.Module, int]:
    """The reference codec saved as a model file and imported alone: (reference, exit status)."""
    reference, _ = _reference_codec(config_name)
    weights = folder / "model.safetensors"
    save_file({f"mimi.{k}": v.contiguous() for k, v in reference.state_dict().items()}, str(weights))
    config = str(CONFIGS_DIR / f"{config_name}.yaml")
    argv = ["import-kyutai", "--codec", "--weights", str(weights), "--config", config]
    return reference, tools_main([*argv, "--out", str(folder / "vae.safetensors")])


def test_converter_cli_writes_an_exported_vae(tmp_path):
    reference, status = _import_codec("english", tmp_path)
    assert status == 0
    audio = _audio(frames=4)
    with torch.no_grad():
        torch.testing.assert_close(
            load_vae(tmp_path / "vae.safetensors").encode(audio),
            reference.encode_to_latent(audio),
            atol=1e-4,
            rtol=1e-4,
        )


def test_converter_cli_refuses_a_v1_codec_alone(tmp_path, capsys):
    """The first release's codec has no latent projection: it encodes voice prompts, not latents."""
    assert _import_codec("english_2026-01", tmp_path)[1] == 2
    assert "v1 codec" in capsys.readouterr().err and not (tmp_path / "vae.safetensors").exists()
