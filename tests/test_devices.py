"""Devices: one resolver (``auto`` | ``cpu`` | ``cuda[:N]``) behind every ``device`` argument, models
and everything they create on the chosen device, the half precisions, batched Whisper decoding,
and a scan of the library for hard-coded devices. The GPU cases run where CUDA is present."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
import torch

from pockettts.devices import DeviceError, resolve_device
from pockettts.eval.quality import onnx_providers
from pockettts.models.flow_lm import FlowLM
from pockettts.models.quantize import set_precision
from pockettts.models.sampling import SamplingOptions
from pockettts.models.tts import TextToSpeech, VoiceState
from pockettts.models.vae import AudioVAE
from pockettts.modules.streaming import flatten_state
from pockettts.whisper import WhisperASR
from tests.support import ROOT, TINY_VAE

STUDENT = ROOT / "recipes" / "tiny" / "checkpoints" / "student.safetensors"
CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
without_cuda = pytest.mark.skipif(CUDA, reason="checks the error of a machine without CUDA")


def _voice_audio(seconds: float = 1.5, sample_rate: int = 24_000) -> torch.Tensor:
    t = torch.arange(int(seconds * sample_rate)) / sample_rate
    return 0.2 * torch.sin(2 * torch.pi * 150 * t) * (1 + torch.sin(2 * torch.pi * 3 * t))


# -- the resolver -------------------------------------------------------------------------------------
def test_resolver_reads_every_spelling_and_names_what_it_refuses():
    assert resolve_device("cpu") == resolve_device(" CPU ") == resolve_device(torch.device("cpu"))
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if CUDA else "cpu")
    for bad in ("gpu", "cuda:x", "cuda:-1", "cuda0", "", "mps"):
        with pytest.raises(DeviceError, match=re.escape(repr(bad))) as error:
            resolve_device(bad)
        assert "auto | cpu | cuda | cuda:N" in str(error.value)
    assert issubclass(DeviceError, ValueError)  # the entry points report ValueErrors and exit 1


@without_cuda
def test_a_cuda_device_on_a_machine_without_one_is_a_clear_error():
    for name in ("cuda", "cuda:1"):
        with pytest.raises(DeviceError, match=f"'{name}' needs CUDA.*device=cpu or device=auto"):
            resolve_device(name)
    with pytest.raises(DeviceError, match="needs CUDA"):
        TextToSpeech.load(STUDENT, device="cuda")


@needs_cuda
def test_a_cuda_index_past_the_last_gpu_is_a_clear_error():
    count = torch.cuda.device_count()
    with pytest.raises(DeviceError, match=f"has {count} CUDA device"):
        resolve_device(f"cuda:{count}")


# -- the model on its device --------------------------------------------------------------------------
@pytest.mark.parametrize("device", ["cpu", "auto"])
def test_text_to_speech_loads_on_the_device_asked_for(device):
    tts = TextToSpeech.load(STUDENT, device=device, overlap_decoding=False)
    expected = resolve_device(device)
    assert tts.device == expected
    assert {p.device for p in [*tts.flow_lm.parameters(), *tts.vae.parameters()]} == {expected}
    voice = tts.voice(_voice_audio(), 24_000)
    generation = tts.generate("Hello.", voice, SamplingOptions(max_frames=4))
    tensors = [voice.latents, *flatten_state(voice.backbone).values(), generation.audio, generation.latents]
    assert {t.device.type for t in tensors} == {expected.type}


def test_generation_creates_every_tensor_on_the_models_device(tts, tmp_path):
    """With torch's default device set to ``meta``, a tensor made without naming a device is a
    data-less meta tensor: mixed with the CPU model's tensors it raises, and returned it is not on the
    CPU. So a CPU model that generates exactly what it generates normally, while the default is meta,
    made every tensor on its own device (what a CUDA model needs). Decoding stays in this thread
    (``overlap_decoding=False``): the default device is per thread. The prompt is at the codec's rate:
    torchaudio's resampling, which runs on the host before the model, makes a tensor of its own."""
    tts.overlap_decoding = False
    texts = ["The bus is leaving.", "Quick, bring the map!"]
    audio = torch.stack([_voice_audio(1.0, tts.vae.sample_rate)] * 2)  # stereo: mixed down

    def speak() -> list[torch.Tensor]:
        voice = tts.voice(audio, tts.vae.sample_rate)
        saved = VoiceState.load(voice.save(tmp_path / "voice.safetensors"), tts.flow_lm)
        outputs = [saved.latents, torch.cat(list(tts.stream(texts[0], voice, SamplingOptions(max_frames=3))))]
        for cfg_scale in (1.0, 1.5):
            options = SamplingOptions(cfg_scale=cfg_scale, max_frames=3, seed=2)
            outputs.append(tts.generate(texts[1], saved, options).latents)
            outputs += [g.audio for g in tts.generate_batch(texts, [voice, saved], options, seeds=[4, 5])]
        return outputs

    expected = speak()
    torch.set_default_device("meta")
    try:
        produced = speak()
    finally:
        torch.set_default_device(None)
    for made, reference in zip(produced, expected, strict=True):
        assert made.device.type == "cpu"
        torch.testing.assert_close(made, reference, rtol=0, atol=0)


def test_a_voice_state_loads_onto_the_models_device(tts, tmp_path):
    path = tts.voice(_voice_audio(), 24_000).save(tmp_path / "voice.safetensors")
    model = FlowLM(**tts.flow_lm.config).to("meta")
    voice = VoiceState.load(path, model)
    assert {t.device.type for t in [voice.latents, *flatten_state(voice.backbone).values()]} == {"meta"}


def test_int8_is_refused_off_the_cpu():
    flow_lm = FlowLM(head={"kind": "lsd", "dim": 8, "depth": 1}, d_model=16, num_heads=2, num_layers=1,
                     dim_feedforward=32, vocab_size=16, latent_dim=8).to("meta")  # fmt: skip
    with pytest.raises(ValueError, match="int8 runs on the CPU only.*bfloat16 or float16"):
        set_precision(flow_lm, AudioVAE(**TINY_VAE).to("meta"), "int8")


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_half_precision_generation_runs_the_flow_lm_under_autocast(tts, precision):
    """The weights stay float32, the backbone's cache fills in the half precision, and the latents
    the codec decodes are float32 and start close to the exact path's."""
    options = SamplingOptions(max_frames=6, seed=1)
    voice = tts.voice(_voice_audio(), 24_000)
    exact = tts.generate("The bus is leaving.", voice, options)
    half = TextToSpeech(tts.flow_lm, tts.vae, tts.tokenizer, precision=precision, overlap_decoding=False)
    half_voice = half.voice(_voice_audio(), 24_000)
    dtypes = {t.dtype for t in flatten_state(half_voice.backbone).values() if t.is_floating_point()}
    assert dtypes == {getattr(torch, precision)}
    assert {p.dtype for p in half.flow_lm.parameters()} == {torch.float32}
    generation = half.generate("The bus is leaving.", half_voice, options)
    batch = half.generate_batch(["The bus is leaving."], [half_voice], options)[0]
    for result in (generation, batch):
        assert result.latents.dtype == result.audio.dtype == torch.float32
        assert result.latents.shape == exact.latents.shape and torch.isfinite(result.audio).all()
        torch.testing.assert_close(result.latents[0], exact.latents[0], atol=0.1, rtol=0.05)


@needs_cuda
@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_cuda_generation_batched_and_streamed(precision):
    tts = TextToSpeech.load(STUDENT, device="cuda", precision=precision)
    voice = tts.voice(_voice_audio(), 24_000)
    options = SamplingOptions(max_frames=20, seed=3)
    one = tts.generate("Hello there.", voice, options)
    again = tts.generate("Hello there.", voice, options)
    batch = tts.generate_batch(["Hello there.", "Goodbye."], [voice, voice], options, seeds=[3, 4])
    assert one.audio.is_cuda and batch[0].latents.is_cuda
    torch.testing.assert_close(one.audio, again.audio, rtol=0, atol=0)  # a seed reproduces on a device
    assert one.latents.shape == batch[0].latents.shape
    if precision == "float32":
        torch.testing.assert_close(one.latents, batch[0].latents, atol=1e-3, rtol=1e-3)
    with pytest.raises(ValueError, match="CPU only"):
        TextToSpeech.load(STUDENT, device="cuda", precision="int8")


# -- the scorers --------------------------------------------------------------------------------------
def test_onnx_providers_put_dnsmos_on_the_gpu_only_when_onnxruntime_has_cuda():
    cpu, gpu = torch.device("cpu"), torch.device("cuda:1")
    assert onnx_providers(cpu, ["CUDAExecutionProvider", "CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert onnx_providers(gpu, ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert onnx_providers(gpu, ["CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        ("CUDAExecutionProvider", {"device_id": 1}),
        "CPUExecutionProvider",
    ]


def test_batched_whisper_decoding_reads_what_one_at_a_time_does(tiny_corpus, tiny_en):
    """Speech, digital silence (the no-speech rule) and a clip over 30 s (transcribed alone)."""
    rows = [json.loads(line) for line in (tiny_corpus / "test.jsonl").read_text().splitlines()][:3]
    clips = [torch.from_numpy(sf.read(tiny_corpus / row["audio"], dtype="float32")[0]) for row in rows]
    rate = sf.info(tiny_corpus / rows[0]["audio"]).samplerate
    long = torch.cat([clips[0]] * (int(31 * rate) // clips[0].shape[0] + 1))
    clips += [torch.zeros(rate), long]
    single = WhisperASR(tiny_en[0], device="cpu")
    batched = WhisperASR(tiny_en[0], device="cpu", batch_size=4)
    expected = single.transcribe_many(clips, rate, progress=False)
    assert batched.transcribe_many(clips, rate, progress=False) == expected
    assert all(expected[:3]) and expected[3] == ""
    assert batched.options["batch_size"] == 4 and single.options["device"] == "cpu"
    with pytest.raises(ValueError, match="batch_size"):
        WhisperASR(tiny_en[0], temperature=0.5, batch_size=2)


# -- the entry points ---------------------------------------------------------------------------------
def _run(script: str, *overrides: str, cwd: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, str(ROOT / script), *overrides, f"hydra.run.dir={cwd / 'hydra'}"]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd)


def test_infer_py_on_device_auto(tmp_path):
    voice = tmp_path / "voice.wav"
    sf.write(voice, _voice_audio().numpy(), 24_000)
    out = tmp_path / "out.wav"
    result = _run("infer.py", f"checkpoint={STUDENT}", "text='Hello there.'", f"voice={voice}", f"out={out}",
                  "device=auto", "sampling.max_frames=25", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr)[-2000:]
    assert out.is_file() and "real-time factor" in result.stdout
    assert ("float32, cuda:" if CUDA else "int8, ") in result.stdout  # each device's default precision
    result = _run(
        "infer.py", f"checkpoint={STUDENT}", "text='Hi.'", f"voice={voice}", "device=gpu", cwd=tmp_path
    )
    assert result.returncode == 1 and "unknown device 'gpu'" in result.stdout + result.stderr


def test_eval_py_on_device_cpu(tiny_corpus, tiny_en, tmp_path):
    overrides = [
        f"checkpoint={STUDENT}", f"testset={tiny_corpus / 'train.jsonl'}", "max_items=1",
        f"whisper={tiny_en[0]}", f"results_root={tmp_path / 'results'}", "sampling.max_frames=25",
        "device=cpu",
    ]  # fmt: skip
    result = _run("eval.py", *overrides, cwd=tmp_path)
    assert result.returncode == 0, (result.stdout + result.stderr)[-2000:]
    (results_file,) = (tmp_path / "results").glob("*/*/results.json")
    results = json.loads(results_file.read_text())
    assert results["summary"]["items"] == 1 and results["machine"]["device"] == "cpu"
    assert results["knobs"]["device"] is None and results["knobs"]["generation_batch_size"] is None
    assert results["asr"]["device"] == "cpu" and results["asr"]["batch_size"] == 1


# -- no hard-coded device in the library --------------------------------------------------------------
_DEVICE_NAME = re.compile(r"(cpu|cuda|mps|xpu|meta)(:\d+)?")
_DEVICE_KEYWORDS = ("device", "map_location")

# (module, function) -> why a literal device is right there
ALLOWED = {
    ("pockettts/devices.py", "resolve_device"): "the resolver: it builds the torch.device everyone else uses",
    ("pockettts/models/vae.py", "load_vae"): "weights read on the host; the built model is then moved",
    ("pockettts/eval/wavlm_ecapa.py", "load_wavlm_ecapa"): "weights read on the host; the speaker embedder "
    "then moves the built model",
    ("pockettts/losses/ssl_distillation.py", "_read_state_dict"): "file read on the host; Lightning moves "
    "the module that holds the weights",
    ("pockettts/training/export_checkpoint.py", "export_checkpoint"): "a training checkpoint read on the "
    "host to be exported (exports are host files)",
    ("pockettts/whisper.py", "is_valid_checkpoint"): "inspects a file's keys, loads no model",
    ("pockettts/tools/whisper_convert.py", "run"): "reads the converted file's dims to print them",
}


def hard_coded_devices(source: str) -> list[tuple[str, str]]:
    """``(function, what)`` for each hard-coded device in Python ``source``.

    The rules (an AST walk, so comments, strings and names that merely contain "cpu" do not count):

    1. no call passes a device literal (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``, ``"meta"``) as
       its ``device=`` or ``map_location=`` keyword, nor positionally to ``.to(...)`` or
       ``torch.Generator(...)``;
    2. no ``.cuda()`` call, and no ``torch.device(...)`` built by hand: devices come from
       ``pockettts.devices.resolve_device`` or from a tensor (``x.device``);
    3. a parameter named ``device`` defaults to ``None`` (meaning "follow the model or the input")
       or to ``"cpu"``, and then the function itself passes it to ``resolve_device``, so the CPU
       default still accepts ``auto`` and ``cuda:N``.

    Not scanned: ``.cpu()``, which moves results to the host for files, numpy and printing.
    """
    found: list[tuple[str, str]] = []

    def literal(node: ast.AST) -> bool:
        return (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and bool(_DEVICE_NAME.fullmatch(node.value))
        )

    def visit(node: ast.AST, function: str) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            function = node.name
            arguments = node.args
            positional = [*arguments.posonlyargs, *arguments.args]
            defaults = dict(zip([a.arg for a in positional][::-1], arguments.defaults[::-1]))
            defaults |= {
                a.arg: d for a, d in zip(arguments.kwonlyargs, arguments.kw_defaults) if d is not None
            }
            default = defaults.get("device")
            if isinstance(default, ast.Constant) and default.value is not None:
                resolved = any(
                    isinstance(call, ast.Call) and ast.unparse(call.func) == "resolve_device"
                    and [ast.unparse(a) for a in call.args] == ["device"]
                    for call in ast.walk(node)
                )  # fmt: skip
                if default.value != "cpu" or not resolved:
                    found.append((function, f"device defaults to {default.value!r} without resolve_device"))
        if isinstance(node, ast.Call):
            name = ast.unparse(node.func)
            if name == "torch.device":
                found.append((function, "builds a torch.device by hand"))
            if name.endswith(".cuda") or name == "cuda":
                found.append((function, "calls .cuda()"))
            for keyword in node.keywords:
                if keyword.arg in _DEVICE_KEYWORDS and literal(keyword.value):
                    found.append((function, f"{keyword.arg}={keyword.value.value!r}"))
            if (name.endswith(".to") or name == "torch.Generator") and any(map(literal, node.args)):
                found.append((function, f"{name}({', '.join(map(ast.unparse, node.args))})"))
        for child in ast.iter_child_nodes(node):
            visit(child, function)

    visit(ast.parse(source), "<module>")
    return found


def test_the_scan_finds_each_kind_of_hard_coded_device():
    source = """
def fine(x, device=None, other="cpu"):
    cpu_count = x.cpu().numpy()  # a host copy for numpy: not a device choice
    return torch.zeros(3, device=x.device), resolve_device("cpu"), "cuda"

def default_resolved(device="cpu"):
    return resolve_device(device)

def default_kept(path, device="cpu"):
    return load(path, device)

def bad(x):
    a = torch.zeros(3, device="cuda:0")
    b = torch.load("f", map_location="cpu")
    return x.to("cuda"), torch.Generator("cpu"), torch.device("cpu"), x.cuda()

def default_cuda(device="cuda"):
    return resolve_device(device)
"""
    assert hard_coded_devices(source) == [
        ("default_kept", "device defaults to 'cpu' without resolve_device"),
        ("bad", "device='cuda:0'"),
        ("bad", "map_location='cpu'"),
        ("bad", "x.to('cuda')"),
        ("bad", "torch.Generator('cpu')"),
        ("bad", "builds a torch.device by hand"),
        ("bad", "calls .cuda()"),
        ("default_cuda", "device defaults to 'cuda' without resolve_device"),
    ]


def test_no_library_module_hard_codes_a_device():
    found, used = [], set()
    for path in sorted((ROOT / "pockettts").rglob("*.py")):
        module = path.relative_to(ROOT).as_posix()
        for function, what in hard_coded_devices(path.read_text(encoding="utf-8")):
            if (module, function) in ALLOWED:
                used.add((module, function))
            else:
                found.append(f"{module}:{function}: {what}")
    assert not found, "hard-coded devices (see hard_coded_devices):\n" + "\n".join(found)
    assert used == set(ALLOWED), f"allowed but no longer needed: {sorted(set(ALLOWED) - used)}"
