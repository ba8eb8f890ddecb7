"""Corpus sources round-trip into manifests: HF datasets built locally, and local folders."""

import io
import json
from pathlib import Path

import datasets
import numpy as np
import pytest
import soundfile as sf

from pockettts.audio import audio_info
from pockettts.data.manifest import ManifestAppender, ManifestItem, read_manifest
from pockettts.data.sources import PRESETS, HFColumns, HFSourceConfig, manifest_from_folder, manifest_from_hf
from pockettts.data.validate import validate_manifest
from tests.support import Crash, write_tone


def _encoded(seconds, sample_rate, channels=1, fmt="WAV"):
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    tone = (0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)
    buffer = io.BytesIO()
    sf.write(buffer, np.stack([tone] * channels, 1) if channels > 1 else tone, sample_rate, format=fmt)
    return buffer.getvalue()


@pytest.fixture
def hf_dataset():
    rows = {
        "audio": [
            {"bytes": _encoded(1.0, 44100, channels=2), "path": "a.wav"},
            {"bytes": _encoded(1.5, 16000, fmt="FLAC"), "path": "b.flac"},
            {"bytes": b"not audio at all", "path": "c.wav"},
        ],
        "text_normalized": ["First line.", "Second line.", "Third line."],
        "speaker_id": [11, 12, 11],
        "id": ["11_a", "12_b", "11_c"],
    }
    return datasets.Dataset.from_dict(rows).cast_column("audio", datasets.Audio())


def test_hf_dataset_from_disk_round_trip_and_resume(tmp_path, hf_dataset):
    hf_dataset.save_to_disk(tmp_path / "saved")
    source = HFSourceConfig(
        name=str(tmp_path / "saved"),
        columns=HFColumns(audio="audio", text="text_normalized", speaker="speaker_id", id="id"),
    )
    out = tmp_path / "corpus" / "train.jsonl"
    counts = manifest_from_hf(source, out, progress=False)
    assert counts == {"written": 2, "resumed": 0, "filtered": 0, "skipped": 1}
    assert "11_c" in out.with_suffix(".skipped.txt").read_text()

    items = read_manifest(out)
    assert [(i.id, i.speaker, i.text) for i in items] == [
        ("11_a", "11", "First line."),
        ("12_b", "12", "Second line."),
    ]
    for item, seconds in zip(items, (1.0, 1.5)):
        info = audio_info(item.resolve_audio(out.parent))
        assert (info.sample_rate, info.channels) == (24000, 1)
        assert info.duration == pytest.approx(seconds, abs=1e-3)

    again = manifest_from_hf(source, out, progress=False)
    assert again["resumed"] == 2 and again["written"] == 0
    assert len(read_manifest(out)) == 2
    assert validate_manifest(out, tmp_path / "clean.jsonl", progress=False).kept == 2


def test_hf_parquet_through_load_dataset(tmp_path, hf_dataset):
    hf_dataset.select([0, 1]).to_parquet(str(tmp_path / "part.parquet"))
    preset = PRESETS["libritts_r"]
    source = HFSourceConfig(
        name="parquet", data_files=[str(tmp_path / "part.parquet")], split="train", columns=preset.columns
    )
    counts = manifest_from_hf(source, tmp_path / "m.jsonl", progress=False)
    assert counts["written"] == 2


def test_hf_path_column_with_offsets_and_filter(tmp_path):
    write_tone(tmp_path / "audio_root" / "chapter1.wav", seconds=6.0, sample_rate=22050)
    rows = [
        {
            "audio_filepath": "chapter1.wav",
            "offset": 0.5,
            "duration": 2.0,
            "normalized_text": "One.",
            "speaker": "92",
            "set": "train",
        },
        {
            "audio_filepath": "chapter1.wav",
            "offset": 3.0,
            "duration": 2.5,
            "normalized_text": "Two.",
            "speaker": "92",
            "set": "train",
        },
        {
            "audio_filepath": "chapter1.wav",
            "offset": 5.0,
            "duration": 1.0,
            "normalized_text": "Held out.",
            "speaker": "92",
            "set": "test",
        },
    ]
    (tmp_path / "manifest.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    preset = PRESETS["hifitts2"]
    source = HFSourceConfig(
        name="json",
        data_files=[str(tmp_path / "manifest.json")],
        split="train",
        columns=preset.columns,
        where=preset.where,
        audio_root=str(tmp_path / "audio_root"),
    )
    out = tmp_path / "out" / "train.jsonl"
    counts = manifest_from_hf(source, out, progress=False)
    assert counts["written"] == 2 and counts["filtered"] == 1
    items = read_manifest(out)
    assert [(i.offset, i.duration, i.text) for i in items] == [(0.5, 2.0, "One."), (3.0, 2.5, "Two.")]
    report = validate_manifest(out, out.parent / "clean.jsonl", progress=False)
    assert report.kept == 2


def test_hf_missing_column_lists_the_available_ones(hf_dataset, tmp_path):
    source = HFSourceConfig(name="x", columns=HFColumns(text="transcript"))
    with pytest.raises(KeyError, match=r"no column\(s\) \['transcript'\].*text_normalized"):
        manifest_from_hf(source, tmp_path / "m.jsonl", dataset=hf_dataset, progress=False)


def test_ljspeech_folder(tmp_path):
    root = tmp_path / "LJSpeech-1.1"
    write_tone(root / "wavs" / "LJ001-0001.wav", seconds=1.0, sample_rate=22050)
    write_tone(root / "wavs" / "LJ001-0002.wav", seconds=1.2, sample_rate=22050)
    (root / "metadata.csv").write_text(
        "LJ001-0001|Printing, in 1912.|Printing, in nineteen twelve.\n"
        "LJ001-0002|No normalised column|\n"
        "broken line without separator\n"
    )
    out = tmp_path / "m" / "lj.jsonl"
    assert manifest_from_folder(root, out) == {"written": 2, "skipped": 1}
    items = read_manifest(out)
    assert [i.text for i in items] == ["Printing, in nineteen twelve.", "No normalised column"]
    assert {i.speaker for i in items} == {"LJSpeech-1.1"}
    assert all(i.resolve_audio(out.parent).is_file() for i in items)


def test_pairs_folder_with_speaker_directories(tmp_path):
    root = tmp_path / "corpus"
    write_tone(root / "103" / "1240" / "103_1240_000001.wav")
    (root / "103" / "1240" / "103_1240_000001.normalized.txt").write_text("Normalised text.\n")
    (root / "103" / "1240" / "103_1240_000001.original.txt").write_text("Original text\n")
    write_tone(root / "27" / "utt2.flac")
    (root / "27" / "utt2.txt").write_text("Plain transcript.")
    write_tone(root / "27" / "orphan.wav")
    out = tmp_path / "pairs.jsonl"
    assert manifest_from_folder(root, out, layout="pairs") == {"written": 2, "skipped": 1}
    items = {i.id: i for i in read_manifest(out)}
    assert items["103_1240_103_1240_000001"].text == "Normalised text."
    assert items["103_1240_103_1240_000001"].speaker == "103"
    assert items["27_utt2"].speaker == "27"
    assert "orphan.wav" in out.with_suffix(".skipped.txt").read_text()


def _hf_corpus(folder: Path):
    """Eight rows of two speakers, FLAC at 44.1 and 16 kHz, the sixth not audio."""
    audio = []
    for index in range(8):
        path = write_tone(
            folder / f"{index}.flac", 0.5 + 0.1 * index, 16000 if index % 2 else 44100, freq=200 + 50 * index
        )
        audio.append({"bytes": path.read_bytes() if index != 5 else b"not audio", "path": path.name})
    rows = {
        "audio": audio,
        "text": [f"Line {i}." for i in range(8)],
        "speaker_id": [i % 2 for i in range(8)],
        "id": [f"u{i}" for i in range(8)],
    }
    return datasets.Dataset.from_dict(rows).cast_column("audio", datasets.Audio())


def _converted(output: Path) -> dict[str, object]:
    """Every file a conversion wrote, by path under its folder: the manifest, the audio, and the
    ids of the skipped list (its messages name objects by their address)."""
    files = {
        str(p.relative_to(output.parent)): p.read_bytes() for p in output.parent.rglob("*") if p.is_file()
    }
    skipped = output.with_suffix(".skipped.txt")
    files[skipped.name] = [line.split("\t")[0] for line in skipped.read_text().splitlines()]
    return files


def test_from_hf_in_parallel_and_after_a_crash_writes_what_a_serial_run_writes(tmp_path, monkeypatch):
    dataset = _hf_corpus(tmp_path / "source")
    source = HFSourceConfig(name="synthetic")
    serial = tmp_path / "serial" / "train.jsonl"
    assert manifest_from_hf(source, serial, dataset, progress=False) == {
        "written": 7,
        "resumed": 0,
        "filtered": 0,
        "skipped": 1,
    }
    parallel = tmp_path / "parallel" / "train.jsonl"
    manifest_from_hf(source, parallel, dataset, progress=False, workers=2)
    assert _converted(parallel) == _converted(serial)

    # The run dies as it lists the seventh row (the workers have converted rows past it): what came
    # before is kept, the rest is done on resume.
    append = ManifestAppender.append

    def crash_at_u6(sink: ManifestAppender, item: ManifestItem) -> None:
        if item.id == "u6":
            raise Crash
        append(sink, item)

    crashed = tmp_path / "crashed" / "train.jsonl"
    monkeypatch.setattr(ManifestAppender, "append", crash_at_u6)
    with pytest.raises(Crash):
        manifest_from_hf(source, crashed, dataset, progress=False, workers=2)
    assert [item.id for item in read_manifest(crashed)] == ["u0", "u1", "u2", "u3", "u4"]
    monkeypatch.setattr(ManifestAppender, "append", append)
    counts = manifest_from_hf(source, crashed, dataset, progress=False, workers=2)
    assert counts == {"written": 2, "resumed": 5, "filtered": 0, "skipped": 1}
    assert _converted(crashed) == _converted(serial)
