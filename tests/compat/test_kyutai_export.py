"""Export to Kyutai's layout: a tiny model of ours (random weights), written as a folder by
``pockettts-tools export-kyutai``, loads in the ``pocket-tts`` package through its own config (the
loader behind ``pocket-tts generate --config``) and speaks exactly as it does here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
import torch
import yaml

from pockettts.audio import load_audio
from pockettts.compat import KyutaiLayoutError
from pockettts.compat.kyutai_folder import export_kyutai_folder
from pockettts.models.bundle import write_export
from pockettts.models.flow_lm import FlowLM
from pockettts.models.sampling import SamplingOptions
from pockettts.models.tts import TextToSpeech
from pockettts.models.vae import AudioVAE
from pockettts.text import train_tokenizer
from pockettts.tools.__main__ import main as tools_main
from tests.support import TINY_VAE

pytest.importorskip("pocket_tts", reason="the export is checked with the pocket-tts test dependency")
from pocket_tts.models.tts_model import TTSModel  # noqa: E402

VOCAB = 64
TEXT = "The cat sat"  # short: EOS never fires here, so every chunk runs its whole frame budget
HEAD_STEPS = {"lsd": 1, "consistency": 1, "flow_matching": 4, "drifting": 1, "pointwise": 1}
# The 2026-10 small models' backbone options: projected grouped-query attention, a bottleneck and a
# low-rank text table.
SMALL_MODEL = dict(attn_dim=48, num_kv_heads=1, z_dim=12, text_rank=8)


@pytest.fixture(scope="module")
def parts(tiny_corpus, tmp_path_factory):
    """A tokenizer, a codec of ours (random weights) and a voice prompt file from the corpus."""
    folder = tmp_path_factory.mktemp("kyutai_export")
    tokenizer = train_tokenizer([tiny_corpus / "train.jsonl"], folder / "tokenizer", vocab_size=VOCAB)
    torch.manual_seed(0)
    vae = AudioVAE(**TINY_VAE).eval()
    with torch.no_grad():  # LayerScale starts at 0.01: make the codec transformer matter
        for name, param in vae.named_parameters():
            if name.endswith("scale"):
                param.uniform_(0.5, 1.0)
    item = json.loads((tiny_corpus / "train.jsonl").read_text().splitlines()[0])
    return folder, tokenizer, vae.save(folder / "vae.safetensors"), tiny_corpus / item["audio"]


def _flow_lm(head: str, **options) -> FlowLM:
    torch.manual_seed(1)
    model = FlowLM(
        head={"kind": head, "dim": 16, "depth": 2}, latent_dim=TINY_VAE["latent_dim"], d_model=32,
        num_heads=2, num_layers=2, dim_feedforward=64, vocab_size=VOCAB, **options,
    )  # fmt: skip
    with torch.no_grad():
        for param in model.head.flow_net.parameters():  # zero-initialised parts would hide bugs
            param.normal_(0.0, 0.1)
        model.set_latent_statistics(torch.randn(model.latent_dim), torch.rand(model.latent_dim) + 0.5)
        # Random models are chaotic: a weaker feedback of the generated latents keeps float rounding
        # from doubling every few frames; a wrong feedback still shows.
        model.input_linear.weight.mul_(0.1)
        model.out_eos.weight.zero_()
        model.out_eos.bias.fill_(-10.0)
    return model.eval()


def _export(parts, head: str, **options) -> Path:
    folder, tokenizer, vae, _ = parts
    name = f"{head}{'_small' if options else ''}"
    return write_export(_flow_lm(head, **options), folder / f"{name}.safetensors", tokenizer, vae)


@pytest.mark.parametrize(
    "head, options",
    [(head, {}) for head in sorted(HEAD_STEPS)] + [("pointwise", SMALL_MODEL)],
    ids=[*sorted(HEAD_STEPS), "pointwise_small_model"],
)
def test_pocket_tts_speaks_the_export_as_we_do(parts, head, options, tmp_path):
    export, voice_file = _export(parts, head, **options), parts[3]
    config = export_kyutai_folder(export, tmp_path / "kyutai", voice=voice_file)
    written = yaml.safe_load(config.read_text())
    for local in (written["weights_path"], written["flow_lm"]["lookup_table"]["tokenizer_path"]):
        assert Path(local).is_absolute() and Path(local).is_file()  # nothing for pocket-tts to download
    assert (tmp_path / "kyutai" / f"voice{voice_file.suffix}").read_bytes() == voice_file.read_bytes()
    steps = HEAD_STEPS[head]
    reference = TTSModel.load_model(config=config, sampler_decode_steps=steps)
    reference.max_decoder_frames_per_call = 1  # one frame per call: the arithmetic of our streaming
    prompt = load_audio(voice_file, sample_rate=24_000)  # [1, T], one resampling for both
    voice = reference.get_state_for_audio_prompt(prompt)
    torch.manual_seed(7)  # after the prompt, which draws noise too
    expected = reference.generate_audio(voice, TEXT)
    ours = TextToSpeech.load(export)
    generation = ours.generate(TEXT, ours.voice(prompt, 24_000), SamplingOptions(seed=7, head_steps=steps))
    assert generation.audio.shape == expected.shape and expected.abs().max() > 1e-3
    torch.testing.assert_close(generation.audio, expected, atol=1e-4, rtol=0)


def test_the_pocket_tts_cli_runs_the_export(parts, tmp_path):
    """``pocket-tts generate --config`` in a subprocess, offline, from another working directory."""
    export, voice_file = _export(parts, "lsd"), parts[3]
    folder = tmp_path / "kyutai"
    assert tools_main(["export-kyutai", str(export), str(folder), "--voice", str(voice_file)]) == 0
    config = folder / "config.yaml"
    out = tmp_path / "speech.wav"
    command = [
        str(Path(sys.executable).with_name("pocket-tts")), "generate", "--config", str(config),
        "--voice", str(folder / f"voice{voice_file.suffix}"), "--text", TEXT,
        "--output-path", str(out), "--quiet",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    subprocess.run(command, check=True, cwd=tmp_path, env=env, timeout=120)
    audio, sample_rate = sf.read(out)
    ours = TextToSpeech.load(export)
    expected = ours.generate(TEXT, ours.voice(load_audio(voice_file, sample_rate=24_000), 24_000)).audio
    silence = sample_rate // 5  # pocket-tts's wav writer ends on 200 ms of silence
    assert sample_rate == 24_000 and len(audio) == len(expected) + silence  # the same frame budget
    assert abs(audio[:-silence]).max() > 1e-3 and not audio[-silence:].any()


@pytest.mark.parametrize(
    "options, named",
    [
        ({"short_context": {"width": 8, "num_heads": 2, "num_layers": 1}}, "short-context transformer"),
        ({"voice_dim": 16}, "16-d voice features"),  # pocket-tts reads the codec's 8-d features
    ],
)
def test_unexpressible_parts_are_refused_by_name(parts, options, named, tmp_path, capsys):
    export = _export(parts, "lsd", **options)
    with pytest.raises(KyutaiLayoutError, match=named):
        export_kyutai_folder(export, tmp_path / "refused")
    assert tools_main(["export-kyutai", str(export), str(tmp_path / "refused")]) == 2
    assert named in capsys.readouterr().err
    assert not (tmp_path / "refused").exists()
