"""Initialising a light decoder from a codec's own: channel pruning with least-squares refits."""

from __future__ import annotations

import json

import pytest
import torch

from pockettts.models.vae import AudioVAE, latent_space_hash, load_vae
from pockettts.tools.__main__ import main as tools_main
from pockettts.training.decoder_pruning import prune_decoder
from tests.support import TINY_VAE, randomise, speechlike

NARROW_SEANET = dict(dimension=8, n_filters=2)
NARROW_TRANSFORMER = dict(d_model=8, num_heads=1, dim_feedforward=16)


@pytest.fixture(scope="module")
def source() -> AudioVAE:
    torch.manual_seed(0)
    vae = AudioVAE(**TINY_VAE, weight_norm=False).eval()
    randomise(vae, seed=1)  # layer scales and biases away from their inits: every layer matters
    return vae


@pytest.fixture(scope="module")
def latents(source) -> torch.Tensor:
    """Calibration latents of 8 speech-like clips of 1 s, ``[8, F, latent_dim]``."""
    with torch.no_grad():
        return source.encode(torch.cat([speechlike(1.0, seed=s) for s in range(8)]))


def _relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    return float((ours - reference).norm() / reference.norm())


def test_pruning_to_the_same_shape_recovers_the_decoder(source, latents):
    """Keeping every channel, the refits solve back the source's own weights: the layouts of the
    design matrices (conv, transposed conv, linear) and the skip targets are right."""
    same, fits = prune_decoder(source, latents, {}, {}, ridge=1e-12)
    assert max(fits.values()) < 1e-4, fits
    with torch.no_grad():
        held_out = source.encode(speechlike(1.0, seed=99))
        assert _relative_error(same.decode(held_out), source.decode(held_out)) < 1e-3


def test_a_narrow_decoder_keeps_the_source_latents_and_approximates_its_audio(source, latents):
    narrow, fits = prune_decoder(source, latents, NARROW_SEANET, NARROW_TRANSFORMER)
    assert narrow.decoder.model[0].conv.weight.shape == (16, 8, 7)
    assert narrow.decoder_transformer.transformer.layers[0].self_attn.num_heads == 1
    # the encoder side is copied: the same latent space
    assert latent_space_hash(narrow.inference_state_dict(), narrow.config) == latent_space_hash(
        source.inference_state_dict(), source.config
    )
    with torch.no_grad():
        reference = source.decode(latents)
        pruned = narrow.decode(latents)
        torch.manual_seed(3)
        untrained = AudioVAE(**narrow.config).eval().decode(latents)
    # the last refit's residual is the waveform's relative error on the calibration clips
    assert fits["decoder.model.11"] == pytest.approx(_relative_error(pruned, reference), rel=1e-3)
    # a random source at half width: the refits explain much of its output, a fresh decoder none
    assert _relative_error(pruned, reference) < 0.85 and _relative_error(untrained, reference) > 0.95


def test_keeping_the_stream_and_heads_keeps_the_attention_and_the_kept_units_exact(source, latents):
    """The shipped light decoder's kind of cut (SEANet and feed-forward narrower, the transformer's
    stream and heads kept): what reads the unchanged stream refits exactly, the rest approximately."""
    narrow, fits = prune_decoder(source, latents, dict(n_filters=2), dict(dim_feedforward=16), ridge=1e-12)
    layer = "decoder_transformer.transformer.layers.0"
    assert fits[f"{layer}.self_attn.out_proj"] < 1e-4 and fits[f"{layer}.linear1"] < 1e-4
    assert 1e-3 < fits[f"{layer}.linear2"] < 1  # half of the units cannot say all the source's do
    assert narrow.decoder_transformer.transformer.layers[0].linear1.out_features == 16
    assert fits["decoder.model.11"] < 0.85


def test_kernel_sizes_may_differ_from_the_source(source, latents):
    narrow, fits = prune_decoder(source, latents, dict(NARROW_SEANET, kernel_size=3), NARROW_TRANSFORMER)
    assert narrow.decoder.model[0].conv.weight.shape[-1] == 3
    assert fits["decoder.model.11"] < 0.85


@pytest.mark.parametrize(
    ("seanet", "transformer", "message"),
    [
        (dict(n_filters=8), {}, "decoder_seanet.n_filters 8 is wider"),
        (dict(ratios=[4, 5, 6]), {}, "decoder_seanet.ratios"),
        (NARROW_SEANET, dict(d_model=16), "must equal decoder_seanet.dimension"),
        (NARROW_SEANET, dict(d_model=8, num_heads=2), "keeps whole heads"),
        (NARROW_SEANET, dict(NARROW_TRANSFORMER, num_layers=2), "num_layers"),
    ],
)
def test_shapes_that_are_not_a_sub_network_are_refused(source, latents, seanet, transformer, message):
    with pytest.raises(ValueError, match=message):
        prune_decoder(source, latents, seanet, transformer)


def test_the_command_writes_a_codec_that_loads(source, tmp_path, capsys):
    from tests.support import write_tone

    for index in range(3):
        write_tone(tmp_path / f"clip{index}.wav", seconds=1.5, freq=200.0 + 50 * index)
    short = write_tone(tmp_path / "short.wav", seconds=0.5)
    manifest = tmp_path / "calibration.jsonl"
    rows = [dict(id=f"clip{i}", audio=f"clip{i}.wav", text="a tone.") for i in range(3)]
    rows.insert(1, dict(id="short", audio=short.name, text="too short."))
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    codec = tmp_path / "vae.safetensors"
    source.save(codec)
    out = tmp_path / "narrow.safetensors"
    tools_main([
        "prune-decoder", "--vae", str(codec), "--manifest", str(manifest), "--items", "8", "--seconds", "1",
        "--seanet", "dimension=8", "n_filters=2", "--transformer", "d_model=8", "num_heads=1",
        "dim_feedforward=16", "--out", str(out),
    ])  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    assert report["calibration_clips"] == 3  # the 0.5 s clip is skipped
    assert report["decoder_parameters"]["narrow"] < report["decoder_parameters"]["source"] / 3
    assert load_vae(out).config["decoder_seanet"]["n_filters"] == 2

    with pytest.raises(ValueError, match="no clip of at least 5.0 s"):
        tools_main(["prune-decoder", "--vae", str(codec), "--manifest", str(manifest), "--seconds", "5",
                    "--out", str(tmp_path / "never.safetensors")])  # fmt: skip
    with pytest.raises(SystemExit, match="expected KEY=VALUE"):
        tools_main(["prune-decoder", "--vae", str(codec), "--manifest", str(manifest),
                    "--seanet", "n_filters", "--out", str(tmp_path / "never.safetensors")])  # fmt: skip
