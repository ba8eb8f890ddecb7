"""The audio VAE: shapes, streaming equals a full pass, causality, export and reload."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from pockettts.models.vae import AudioVAE, latent_space_hash, load_vae, vae_latent_hash, weights_hash
from tests.support import TINY_VAE, assert_causal, random_chunks, run_streamed


def _speechlike(batch: int, frames: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    t = torch.arange(frames * 1920) / 24_000
    return 0.2 * torch.sin(2 * torch.pi * 180 * t) + 0.05 * torch.randn(
        batch, 1, t.numel(), generator=generator
    )


def test_shapes_and_frame_rate(tiny_vae):
    audio = _speechlike(2, 7)
    latent = tiny_vae.encode(audio)
    assert latent.shape == (2, 7, 8)
    assert tiny_vae.decode(latent).shape == (2, 1, 7 * 1920)
    # A partial last frame is padded, not dropped.
    assert tiny_vae.encode(audio[..., :-100]).shape == (2, 7, 8)


def test_streaming_encode_and_decode_equal_full_pass(tiny_vae):
    audio = _speechlike(2, 9)
    with torch.no_grad():
        latent = tiny_vae.encode(audio)
        for seed in range(2):
            state, chunks, start = tiny_vae.init_state(2), [], 0
            for size in random_chunks(audio.shape[-1], 3000, seed):
                chunks.append(tiny_vae.encode(audio[..., start : start + size], state))
                start += size
            torch.testing.assert_close(torch.cat(chunks, dim=1), latent)
        decoded = tiny_vae.decode(latent)
        streamed = run_streamed(
            tiny_vae.decode, latent, max_chunk=3, time_dim=1, state_of=tiny_vae, out_time_dim=-1
        )
        torch.testing.assert_close(streamed, decoded)


def test_encode_and_decode_are_causal(tiny_vae):
    audio = _speechlike(1, 8)
    with torch.no_grad():
        assert_causal(tiny_vae.encode, audio, cut=4 * 1920, out_per_in=1 / 1920, time_dim=-1, out_time_dim=1)
        latent = tiny_vae.encode(audio)
        assert_causal(tiny_vae.decode, latent, cut=3, out_per_in=1920, time_dim=1, out_time_dim=-1)


def test_training_forward_returns_posterior_and_reconstruction():
    torch.manual_seed(0)
    vae = AudioVAE(**TINY_VAE, logvar_init=-4.0)
    out = vae(_speechlike(2, 3))
    assert out["reconstruction"].shape == (2, 1, 3 * 1920)
    assert out["mean"].shape == out["logvar"].shape == (2, 8, 3)
    torch.testing.assert_close(out["logvar"], torch.full_like(out["logvar"], -4.0))
    assert not torch.equal(out["latent"], out["mean"])
    out["reconstruction"].pow(2).mean().backward()
    assert all(p.grad is not None for n, p in vae.named_parameters() if "logvar" not in n)


def test_bad_input_shapes_are_named(tiny_vae):
    with pytest.raises(ValueError, match=r"mono audio \[B, 1, T\]"):
        tiny_vae.encode(torch.zeros(2, 1920))
    with pytest.raises(ValueError, match=r"latents \[B, F, 8\]"):
        tiny_vae.decode(torch.zeros(1, 3, 32))


def test_frame_size_must_fit_the_seanet_hop():
    with pytest.raises(ValueError, match="not a multiple of the SEANet hop"):
        AudioVAE(**{**TINY_VAE, "frame_rate": 7.0})


def test_export_reload_gives_identical_outputs(tmp_path):
    torch.manual_seed(0)
    vae = AudioVAE(**TINY_VAE).eval()  # weight-normalised, as in training
    with torch.no_grad():
        for name, param in vae.named_parameters():
            if name.endswith("original0"):
                param.mul_(1.7)
    path = vae.save(tmp_path / "vae.safetensors")
    assert path.with_suffix(".json").is_file()
    loaded = load_vae(path)
    audio = _speechlike(1, 5)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(audio), vae.encode(audio))
        torch.testing.assert_close(loaded.decode(vae.encode(audio)), vae.decode(vae.encode(audio)))
    # and folded weights load back into a weight-normalised model unchanged (fine-tuning)
    again = AudioVAE(**TINY_VAE).eval()
    again.load_inference_state_dict(loaded.inference_state_dict())
    with torch.no_grad():
        torch.testing.assert_close(again.encode(audio), vae.encode(audio))


def test_weights_hash_tracks_weights(tiny_vae):
    tensors = tiny_vae.inference_state_dict()
    assert weights_hash(tensors) == weights_hash(dict(reversed(list(tensors.items()))))
    tensors["quantizer.output_proj.weight"] = tensors["quantizer.output_proj.weight"] + 1e-3
    assert weights_hash(tensors) != weights_hash(tiny_vae.inference_state_dict())


def test_the_latent_hash_covers_the_encoder_side_only(tiny_vae, tmp_path):
    """Same encoder, another decoder (weights or width): same latent hash. Another encoder weight or
    encoder config: another hash. A file without the recorded hash gets it computed."""
    tensors, config = tiny_vae.inference_state_dict(), tiny_vae.config
    reference = latent_space_hash(tensors, config)
    decoder_moved = {**tensors, "decoder.model.0.conv.weight": tensors["decoder.model.0.conv.weight"] + 1}
    assert latent_space_hash(decoder_moved, {**config, "decoder_transformer": {}}) == reference
    encoder_moved = {**tensors, "encoder.model.0.conv.weight": tensors["encoder.model.0.conv.weight"] + 1}
    assert latent_space_hash(encoder_moved, config) != reference
    other_ratios = {**config, "seanet": {**config["seanet"], "ratios": [5, 6, 4]}}
    assert latent_space_hash(tensors, other_ratios) != reference

    path = tiny_vae.save(tmp_path / "vae.safetensors")
    assert vae_latent_hash(path) == reference
    save_file(load_file(str(path)), str(tmp_path / "bare.safetensors"), metadata={
        "format": "pockettts.vae", "config": json.dumps(config)})  # fmt: skip
    assert vae_latent_hash(tmp_path / "bare.safetensors") == reference


def test_load_vae_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        load_vae(tmp_path / "missing.safetensors")
    other = tmp_path / "other.safetensors"
    save_file({"x": torch.zeros(1)}, str(other))
    with pytest.raises(ValueError, match="other.safetensors is not an exported pockettts VAE"):
        load_vae(other)
