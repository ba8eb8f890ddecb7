import numpy as np
import pytest
import soundfile as sf
import torch

from pockettts.audio import (
    AudioError,
    is_silent,
    load_audio,
    loudness_db,
    read_audio,
    save_audio,
)
from tests.support import write_tone


def test_load_audio_makes_mono_24k_at_target_loudness(tmp_path):
    path = write_tone(tmp_path / "stereo.wav", seconds=2.0, sample_rate=44100, channels=2, freq=300)
    wav = load_audio(path)
    assert wav.shape == (1, 48000)
    assert loudness_db(wav, 24000) == pytest.approx(-23.0, abs=0.5)
    # The tone survives resampling at its own frequency.
    spectrum = torch.fft.rfft(wav[0]).abs()
    assert int(spectrum.argmax()) * 24000 / wav.shape[-1] == pytest.approx(300, abs=1)


def test_peak_ceiling_limits_gain_on_peaky_audio(tmp_path):
    data = np.zeros(24000, dtype=np.float32)
    data[::2400] = 0.9  # sparse clicks: low loudness, high peak
    sf.write(tmp_path / "clicks.wav", data, 24000)
    wav = load_audio(tmp_path / "clicks.wav")
    assert float(wav.abs().max()) <= 10 ** (-1 / 20) + 1e-4


def test_window_read_returns_the_requested_samples(tmp_path):
    ramp = np.linspace(-0.5, 0.5, 16000, dtype=np.float32)
    sf.write(tmp_path / "ramp.wav", ramp, 16000, subtype="FLOAT")
    wav, rate = read_audio(tmp_path / "ramp.wav", offset=0.25, duration=0.5)
    assert rate == 16000 and wav.shape == (1, 8000)
    assert torch.allclose(wav[0], torch.from_numpy(ramp[4000:12000]))
    with pytest.raises(AudioError, match="runs past the end"):
        read_audio(tmp_path / "ramp.wav", offset=0.9, duration=0.5)


def test_errors_name_the_file(tmp_path):
    with pytest.raises(AudioError, match="not found: .*nope.wav"):
        load_audio(tmp_path / "nope.wav")
    (tmp_path / "bad.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    with pytest.raises(AudioError, match="unreadable audio .*bad.wav"):
        load_audio(tmp_path / "bad.wav")


def test_silence_is_detected_and_left_unscaled(tmp_path):
    sf.write(tmp_path / "quiet.wav", np.full(24000, 1e-5, dtype=np.float32), 24000)
    wav = load_audio(tmp_path / "quiet.wav")
    assert is_silent(wav, 24000)
    assert float(wav.abs().max()) < 1e-3  # not amplified to -23 LUFS
    assert not is_silent(load_audio(write_tone(tmp_path / "tone.wav")), 24000)


def test_save_audio_round_trip_leaves_no_temporary_files(tmp_path):
    wav = torch.sin(torch.linspace(0, 100, 24000))[None] * 0.5
    path = save_audio(tmp_path / "sub" / "x.flac", wav, 24000)
    back, rate = read_audio(path)
    assert rate == 24000 and back.shape == wav.shape
    assert torch.allclose(back, wav, atol=1e-4)
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.flac"]
    with pytest.raises(ValueError, match="unsupported audio suffix"):
        save_audio(tmp_path / "x.mp4", wav, 24000)


def test_save_audio_writes_opus_for_listening_copies(tmp_path):
    """``.ogg``: Opus, far smaller than 16-bit PCM, read back at its rate and length, close to the input."""
    wav = torch.sin(torch.linspace(0, 2000, 48000))[None] * 0.5
    opus = save_audio(tmp_path / "x.ogg", wav, 24000)
    pcm = save_audio(tmp_path / "x.wav", wav, 24000)
    assert opus.stat().st_size * 5 < pcm.stat().st_size
    back, rate = read_audio(opus)
    assert rate == 24000 and abs(back.shape[-1] - wav.shape[-1]) < 1000
    n = min(back.shape[-1], wav.shape[-1])
    # a lossy codec: same energy, not the same samples
    assert abs(float(back[..., :n].square().mean()) - float(wav[..., :n].square().mean())) < 0.02
