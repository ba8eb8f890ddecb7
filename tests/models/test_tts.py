"""The inference API: text chunking, voice states (saved and reloaded), streaming synthesis that
equals decoding all generated latents at once, and clear errors on bad input."""

from __future__ import annotations

import copy
import json
import time

import pytest
import torch

import pockettts.models.quantize
from pockettts.audio import AudioError
from pockettts.models.bundle import read_export, write_export
from pockettts.models.flow_lm import FlowLM
from pockettts.models.sampling import SamplingOptions
from pockettts.models.tts import (
    MAX_AWAITED_FRAMES,
    TextToSpeech,
    VoiceState,
    _overlapped,
    prepare_text,
    split_text,
)
from pockettts.models.vae import AudioVAE
from pockettts.text import TextError
from tests.support import ROOT, TINY_VAE, TINY_VOCAB


def _voice_audio(seconds: float = 2.0, sample_rate: int = 44_100, channels: int = 2) -> torch.Tensor:
    t = torch.arange(int(seconds * sample_rate)) / sample_rate
    return (0.2 * torch.sin(2 * torch.pi * 150 * t) * (1 + torch.sin(2 * torch.pi * 3 * t))).repeat(
        channels, 1
    )


def test_text_is_split_at_sentences_under_the_token_budget(tts):
    text = "the cat sat on the mat. A dog barked loudly at the moon, then slept! Why not?"
    chunks = split_text(text, tts.tokenizer, max_tokens=12)
    assert all(len(tts.tokenizer.encode(c)) <= 12 for c in chunks)
    assert " ".join(chunks).split() == text.split()
    assert len(split_text(text, tts.tokenizer, max_tokens=500)) == 1
    assert prepare_text("hello there") == "Hello there."
    with pytest.raises(TextError):
        split_text("  ...  ", tts.tokenizer)


def test_streaming_synthesis_equals_decoding_all_latents(tts):
    voice = tts.voice(_voice_audio(), 44_100)  # stereo, 44.1 kHz: converted
    chunks = list(tts.stream("Quick, the bus is leaving!", voice, SamplingOptions(seed=3)))
    assert all(c.shape == (tts.vae.frame_size,) for c in chunks)
    generation = tts.generate("Quick, the bus is leaving!", voice, SamplingOptions(seed=3))
    assert generation.latents.shape == (len(chunks), tts.flow_lm.latent_dim)
    assert not generation.eos_reached  # the fixture's EOS head never fires: every chunk hit its budget
    torch.testing.assert_close(torch.cat(chunks), generation.audio)
    decoded_at_once = tts.vae.decode(generation.latents[None])[0, 0]
    fade = tts.vae.sample_rate // 200  # a chunk's first 5 ms are faded in (decoder start-up click)
    decoded_at_once[:fade] *= torch.linspace(0, 1, fade)
    torch.testing.assert_close(torch.cat(chunks), decoded_at_once, atol=1e-5, rtol=1e-5)


def test_batched_generation_equals_one_request_at_a_time(tts):
    """Different voices, texts of different lengths (one of two chunks), CFG on and off."""
    voices = [tts.voice(_voice_audio(2.0), 44_100), tts.voice(_voice_audio(1.3, 16_000, 1), 16_000)]
    texts = ["The bus is leaving.", "Quick! Run to the station, the last train leaves at nine tonight."]
    for cfg_scale in (1.0, 1.5):
        options = SamplingOptions(cfg_scale=cfg_scale, max_tokens=12)
        batch = tts.generate_batch(texts, voices, options, seeds=[5, 6])
        for text, voice, seed, together in zip(texts, voices, [5, 6], batch):
            alone = tts.generate(text, voice, SamplingOptions(cfg_scale=cfg_scale, max_tokens=12, seed=seed))
            assert together.latents.shape == alone.latents.shape
            torch.testing.assert_close(together.latents, alone.latents, atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(together.audio, alone.audio, atol=1e-4, rtol=1e-4)
    assert len(split_text(prepare_text(texts[1]), tts.tokenizer, 12)) > 1


def test_eos_stops_each_row_of_a_batch_on_its_own(tts):
    """A row stops frames_after_eos frames after its EOS (never before frame 6); others go on."""
    voice = tts.voice(_voice_audio(), 44_100)
    with torch.no_grad():
        tts.flow_lm.out_eos.bias.fill_(100.0)  # EOS from the first frame the rule allows
    # Pocket TTS's guess: 5 frames after EOS for chunks of at most 4 words, 3 for longer ones.
    short, long = tts.generate_batch(["Hello there.", "Hello there, my good friend."], [voice, voice])
    assert short.eos_reached and long.eos_reached
    assert (short.latents.shape[0], long.latents.shape[0]) == (6 + 5, 6 + 3)


def test_voice_state_round_trip_and_cfg(tts, tmp_path):
    voice = tts.voice(_voice_audio(), 44_100)
    path = voice.save(tmp_path / "voice.safetensors")
    again = VoiceState.load(path, tts.flow_lm)
    seeded = SamplingOptions(seed=1)
    first = tts.synthesize("The bus is leaving.", voice, seeded)
    torch.testing.assert_close(tts.synthesize("The bus is leaving.", again, seeded), first)
    guided = SamplingOptions(seed=1, cfg_scale=2.0)
    assert not torch.allclose(tts.synthesize("The bus is leaving.", voice, guided), first)
    # the voice state is not consumed
    torch.testing.assert_close(tts.synthesize("The bus is leaving.", voice, seeded), first)


def test_bad_voice_and_model_mismatch_are_named(tts, tmp_path):
    with pytest.raises(AudioError, match="silent"):
        tts.voice(torch.zeros(1, 24_000), 24_000)
    with pytest.raises(ValueError, match="the model expects"):
        TextToSpeech(FlowLM(**{**tts.flow_lm.config, "vocab_size": TINY_VOCAB + 1}), tts.vae, tts.tokenizer)


def _infer(tmp_path, *overrides):
    import subprocess
    import sys

    command = [
        sys.executable,
        str(ROOT / "infer.py"),
        f"hydra.run.dir={tmp_path / 'run'}",
        f"paths.log_dir={tmp_path}",
    ]
    return subprocess.run([*command, *overrides], capture_output=True, text=True, cwd=tmp_path)


def test_infer_py_speaks_texts_and_reports_speed(tts, tmp_path):
    import soundfile as sf

    voice_wav = tmp_path / "voice.wav"
    sf.write(voice_wav, _voice_audio(sample_rate=16_000, channels=1)[0].numpy(), 16_000)
    checkpoint = tmp_path / "export" / "flow_lm.safetensors"
    saved = tmp_path / "voice.safetensors"
    result = _infer(tmp_path, f"checkpoint={checkpoint}", "text='The bus is leaving.'", f"voice={voice_wav}",
                    f"out={tmp_path / 'out.wav'}", f"save_voice={saved}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "real-time factor" in result.stdout and "int8" in result.stdout  # the default precision
    assert (tmp_path / "out.wav").is_file()
    lines = tmp_path / "texts.txt"
    lines.write_text("First line.\n\nSecond one here.\n")
    result = _infer(tmp_path, f"checkpoint={checkpoint}", f"text_file={lines}", "precision=float32",
                    f"voice={tmp_path / 'voice.safetensors'}", f"out={tmp_path / 'many'}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "many").glob("*.wav")) == ["0000.wav", "0001.wav"]


def test_infer_py_bad_input_exits_nonzero_with_the_reason(tts, tmp_path):
    checkpoint = tmp_path / "export" / "flow_lm.safetensors"
    silent = tmp_path / "silent.wav"
    import soundfile as sf

    sf.write(silent, torch.zeros(16_000).numpy(), 16_000)
    cases = [
        (["text='...'", f"voice={silent}"], "silent"),
        (["text='Hello.'", f"voice={tmp_path / 'missing.wav'}"], "missing.wav"),
    ]
    for overrides, reason in cases:
        result = _infer(tmp_path, f"checkpoint={checkpoint}", *overrides, f"out={tmp_path / 'x.wav'}")
        output = result.stdout + result.stderr  # Hydra sends log records to stdout
        assert result.returncode != 0 and reason in output, output[-1500:]
    voice_wav = tmp_path / "voice.wav"
    sf.write(voice_wav, _voice_audio(sample_rate=16_000, channels=1)[0].numpy(), 16_000)
    result = _infer(
        tmp_path,
        f"checkpoint={checkpoint}",
        "text='  ...  '",
        f"voice={voice_wav}",
        f"out={tmp_path / 'x.wav'}",
    )
    assert result.returncode != 0 and "..." in result.stdout + result.stderr
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF not really a wav file")
    other_vae = tmp_path / "other_vae.safetensors"
    AudioVAE(**{**TINY_VAE, "latent_dim": 4}).save(other_vae)
    for overrides, reason in [
        (["text=''", f"voice={voice_wav}"], "nothing to say"),
        (["text='Hello.'", f"voice={garbage}"], "garbage.wav"),
        (["text='Hello.'", f"voice={voice_wav}", f"vae={other_vae}"], "encodes another latent space"),
    ]:
        result = _infer(tmp_path, f"checkpoint={checkpoint}", *overrides, f"out={tmp_path / 'x.wav'}")
        output = result.stdout + result.stderr
        assert result.returncode != 0 and reason in output, output[-1500:]
    result = _infer(tmp_path, f"checkpoint={checkpoint}", "text='Hello.'", f"voice={voice_wav}",
                    "max_voice_seconds=0.5", f"out={tmp_path / 'short.wav'}")  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "using its first" in output, output[-1500:]  # trimmed, warned


def test_overlapped_decoding_equals_one_thread(tts):
    voice = tts.voice(_voice_audio(), 44_100)
    text = "Quick! Run to the station, the last train leaves at nine tonight."
    options = SamplingOptions(seed=2, max_tokens=12)
    overlapped = tts.generate(text, voice, options)
    tts.overlap_decoding = False
    try:
        sequential = tts.generate(text, voice, options)
    finally:
        tts.overlap_decoding = True
    torch.testing.assert_close(overlapped.latents, sequential.latents)
    torch.testing.assert_close(overlapped.audio, sequential.audio, atol=1e-5, rtol=1e-5)
    threads = torch.get_num_threads()
    next(tts.stream(text, voice))  # abandoned after one chunk: the worker stops, threads restored
    assert torch.get_num_threads() == threads


def test_int8_precision_stays_close_to_float32(tts, tmp_path, monkeypatch):
    voice = tts.voice(_voice_audio(), 44_100)
    exact = tts.generate("The bus is leaving.", voice, SamplingOptions(seed=4))
    flow_lm, vae = copy.deepcopy(tts.flow_lm), copy.deepcopy(tts.vae)
    monkeypatch.setattr(pockettts.models.quantize, "INT8_MIN_WEIGHTS", 0)  # the tiny linears too
    quantized = TextToSpeech(flow_lm, vae, tts.tokenizer, precision="int8")
    assert isinstance(flow_lm.transformer.layers[0].linear1, torch.ao.nn.quantized.dynamic.Linear)
    approx = quantized.generate(
        "The bus is leaving.", quantized.voice(_voice_audio(), 44_100), SamplingOptions(seed=4)
    )
    first = slice(0, 8)  # before autoregressive drift compounds
    error = (approx.latents[first] - exact.latents[first]).abs().mean() / exact.latents[first].std()
    assert error < 0.1
    with pytest.raises(ValueError, match="precision"):
        TextToSpeech(tts.flow_lm, tts.vae, tts.tokenizer, precision="fp8")


def _recording(real, opened: list[str]):
    def recorded(path, *args, **kwargs):
        opened.append(str(path))
        return real(path, *args, **kwargs)

    return recorded


def test_loading_an_export_reads_its_file_once(tts, tmp_path, monkeypatch):
    """``TextToSpeech.load`` reads the export's header and weights in one open of the file."""
    import pockettts.models.bundle
    import pockettts.models.vae

    opened: list[str] = []
    for module in (pockettts.models.bundle, pockettts.models.vae):
        for name in ("safe_open", "load_file"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, _recording(getattr(module, name), opened))
    path = tmp_path / "export" / "flow_lm.safetensors"
    TextToSpeech.load(path)
    assert opened.count(str(path)) == 1
    assert str(tmp_path / "export" / "vae.safetensors") in opened  # the recording works


def test_an_export_round_trips_with_its_metadata(tts, tmp_path):
    """``write_export`` -> ``read_export``: the same weights and config, the tokenizer copied beside
    it, the codec, step and EMA flag recorded, and a readable ``.json`` beside it."""
    vae = tmp_path / "export" / "vae.safetensors"
    path = tmp_path / "other" / "model.safetensors"
    write_export(tts.flow_lm, path, tts.tokenizer.path, vae, step=12, ema=True)
    export = read_export(path)
    assert export.flow_lm.config == tts.flow_lm.config and not export.flow_lm.training
    for name, tensor in tts.flow_lm.state_dict().items():
        assert torch.equal(export.flow_lm.state_dict()[name], tensor), name
    assert export.tokenizer == tmp_path / "other" / tts.tokenizer.path.name and export.tokenizer.is_file()
    assert (export.step, export.ema, export.codec()) == (12, True, vae)
    readable = json.loads(path.with_suffix(".json").read_text())
    assert readable == {**export.metadata, "config": tts.flow_lm.config}
    bare = read_export(write_export(tts.flow_lm, tmp_path / "bare.safetensors"))
    assert (bare.step, bare.ema) == (None, None)
    with pytest.raises(ValueError, match="records no VAE"):
        bare.codec()
    with pytest.raises(ValueError, match="not an exported pockettts FlowLM"):
        read_export(vae)


def test_a_moved_export_finds_its_vae_beside_it_by_hash(tiny_vae, tmp_path):
    """Shipped or copied exports record a VAE path that is gone or holds another codec: the file of
    that name beside the export is used, but only if its weights are the recorded ones."""
    torch.manual_seed(0)
    flow_lm = FlowLM(head={"kind": "lsd", "dim": 16, "depth": 1}, d_model=16, num_heads=2, num_layers=1,
                     dim_feedforward=32, vocab_size=TINY_VOCAB, latent_dim=8)  # fmt: skip
    recorded = tiny_vae.save(tmp_path / "run" / "export" / "vae.safetensors")
    beside = tiny_vae.save(tmp_path / "shipped" / "vae.safetensors")
    path = write_export(flow_lm, tmp_path / "shipped" / "flow_lm.safetensors", vae=recorded)
    assert read_export(path).codec() == recorded
    torch.manual_seed(1)
    other = AudioVAE(**tiny_vae.config)  # another codec of the same shape
    other.save(recorded)  # e.g. a later run in the same run directory
    assert read_export(path).codec() == beside
    recorded.unlink()  # e.g. the export copied to another machine
    assert read_export(path).codec() == beside
    other.save(beside)
    with pytest.raises(ValueError, match="hold another VAE"):
        read_export(path).codec()
    beside.unlink()
    with pytest.raises(FileNotFoundError, match="exists neither there nor beside it"):
        read_export(path).codec()


def test_a_given_codec_must_encode_the_exports_latent_space(tiny_vae, tmp_path):
    """A codec with another decoder on the export's latents decodes them; one with another encoder
    is refused, naming both."""
    flow_lm = FlowLM(head={"kind": "lsd", "dim": 16, "depth": 1}, d_model=16, num_heads=2, num_layers=1,
                     dim_feedforward=32, vocab_size=TINY_VOCAB, latent_dim=8)  # fmt: skip
    trained_with = tiny_vae.save(tmp_path / "run" / "vae.safetensors")
    export = read_export(write_export(flow_lm, tmp_path / "flow_lm.safetensors", vae=trained_with))
    wider = {"n_filters": 8, "dimension": 32}
    wide = AudioVAE(**{**tiny_vae.config, "decoder_seanet": wider, "weight_norm": False})
    wide.load_inference_state_dict(tiny_vae.inference_state_dict(), encoder_only=True)
    wide_path = wide.save(tmp_path / "wide" / "vae.safetensors")
    assert export.codec() == trained_with and export.codec(wide_path) == wide_path
    torch.manual_seed(1)
    other = AudioVAE(**tiny_vae.config).save(tmp_path / "other" / "vae.safetensors")
    with pytest.raises(ValueError, match="another latent space") as info:
        export.codec(other)
    assert str(other) in str(info.value) and str(export.path) in str(info.value)


def test_decoding_batches_wait_for_frames_while_the_audio_lasts():
    """The first frame is decoded alone; later batches wait for up to ``MAX_AWAITED_FRAMES`` frames
    while the audio handed out lasts (here 10 s per frame: always), never across a text chunk's start."""
    threads = torch.get_num_threads()
    seen_threads = []

    def slow_frames():
        for index in range(30):
            time.sleep(0.005)
            seen_threads.append(torch.get_num_threads())
            yield torch.full((1, 2), float(index)), index in (0, 20)  # text chunks start at 0 and 20

    def full_batches(start: int, stop: int) -> list[int]:
        return [min(MAX_AWAITED_FRAMES, stop - first) for first in range(start, stop, MAX_AWAITED_FRAMES)]

    batches = list(_overlapped(slow_frames(), frame_seconds=10.0))
    assert [len(batch) for batch in batches] == [1, *full_batches(1, 20), *full_batches(20, 30)]
    assert MAX_AWAITED_FRAMES in [len(batch) for batch in batches]
    assert [int(latent[0, 0]) for batch in batches for latent, _ in batch] == list(range(30))
    assert not any(opens for batch in batches for _, opens in batch[1:])
    assert set(seen_threads) == {max(1, threads // 2)} and torch.get_num_threads() == threads
