"""Test-set loaders: LibriSpeech-PC list, Seed-TTS meta, manifests, missing files, dispatch by name."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from pockettts.audio import SAMPLE_RATE
from pockettts.data.manifest import ManifestItem, TimedSpan, write_manifest
from pockettts.eval.testsets import (
    LIBRISPEECH_PC_LIST,
    TestSetError,
    load_librispeech_pc,
    load_manifest_testset,
    load_prompt_audio,
    load_reference_audio,
    load_seed_tts,
    load_testset,
)
from tests.support import write_tone

LIST_SHA256 = "09811d521effa4eeb1da655f7379de97343b2f5ea86d829ec7ccb8656758a10f"
FIRST_LINE = dict(
    prompt="4992-41806-0009",
    prompt_text="exclaimed Bill Harmon to his wife as they went through the lighted hall.",
    target="4992-23283-0000",
    target_text=(
        "But the more forgetfulness had then prevailed, the more powerful was the force of "
        "remembrance when she awoke."
    ),
)


def librispeech_file(split_dir: Path, utt: str) -> Path:
    speaker, chapter, _ = utt.split("-")
    return write_tone(split_dir / speaker / chapter / f"{utt}.flac", seconds=0.2)


def test_shipped_list_is_the_published_file():
    data = LIBRISPEECH_PC_LIST.read_bytes()
    assert hashlib.sha256(data).hexdigest() == LIST_SHA256
    lines = data.decode("utf-8").splitlines()
    assert len(lines) == 1127 and all(line.count("\t") == 5 for line in lines)
    assert (LIBRISPEECH_PC_LIST.parent / "README.md").is_file()  # source and licences


@pytest.mark.parametrize("layout", ["test-clean", "LibriSpeech", "parent"])
def test_librispeech_pc_shipped_list_over_partial_audio(tmp_path, layout):
    split_dir = tmp_path / "LibriSpeech" / "test-clean"
    librispeech_file(split_dir, FIRST_LINE["prompt"])
    librispeech_file(split_dir, FIRST_LINE["target"])
    root = {"test-clean": split_dir, "LibriSpeech": split_dir.parent, "parent": tmp_path}[layout]
    testset = load_librispeech_pc(None, root)
    assert testset.name == "librispeech_pc"
    # only the first line has both files; every other line is reported, not raised
    item = next(i for i in testset.items if i.id == FIRST_LINE["target"])
    assert item.text == FIRST_LINE["target_text"]  # CRLF stripped
    assert item.prompt_text == FIRST_LINE["prompt_text"]
    assert item.prompt_audio == split_dir / "4992" / "41806" / "4992-41806-0009.flac"
    assert item.reference_audio == split_dir / "4992" / "23283" / "4992-23283-0000.flac"
    assert item.speaker == "4992"
    assert len(testset.items) + len({i for i, _ in testset.missing}) == 1127
    assert all(Path(p).suffix == ".flac" and not Path(p).exists() for _, p in testset.missing)


def test_librispeech_pc_custom_list_counts_missing_files(tmp_path):
    rows = [
        ("1-2-0001", "1.5", "Prompt one.", "1-2-0002", "3.0", "Target one."),
        ("3-4-0001", "2.0", "Prompt two!", "3-4-0002", "4.0", "Target two?"),
        ("5-6-0001", "2.0", "Prompt three.", "5-6-0002", "4.0", "Target three."),
    ]
    lst = tmp_path / "my.lst"
    lst.write_text("".join("\t".join(r) + "\n" for r in rows) + "\n")
    root = tmp_path / "test-clean"
    for utt in ("1-2-0001", "1-2-0002", "3-4-0002"):  # line 2 lacks its prompt, line 3 both files
        librispeech_file(root, utt)
    testset = load_librispeech_pc(lst, root)
    assert [i.id for i in testset.items] == ["1-2-0002"]
    assert testset.missing == [
        ("3-4-0002", str(root / "3" / "4" / "3-4-0001.flac")),
        ("5-6-0002", str(root / "5" / "6" / "5-6-0001.flac")),
        ("5-6-0002", str(root / "5" / "6" / "5-6-0002.flac")),
    ]


def test_librispeech_pc_bad_input(tmp_path):
    bad = tmp_path / "bad.lst"
    bad.write_text("1-2-0001\t1.5\tonly three fields\n")
    with pytest.raises(TestSetError, match=r"bad.lst:1: expected 6 tab-separated fields"):
        load_librispeech_pc(bad, tmp_path)
    bad.write_text("spk1\t1.5\tPrompt.\t1-2-0002\t3.0\tTarget.\n")
    with pytest.raises(TestSetError, match=r"bad.lst:1: not a LibriSpeech utterance id: 'spk1'"):
        load_librispeech_pc(bad, tmp_path)
    with pytest.raises(FileNotFoundError, match="LibriSpeech root not found"):
        load_librispeech_pc(None, tmp_path / "nowhere")


def test_librispeech_pc_prompts_from_a_folder_of_per_item_files(tmp_path):
    """prompt_dir: the prompt utterance's own file there (wav or flac) replaces its LibriSpeech
    recording, which need not exist; the target recording stays the reference."""
    rows = [
        ("1-2-0001", "1.5", "Prompt one.", "1-2-0002", "3.0", "Target one."),
        ("3-4-0001", "2.0", "Prompt two.", "3-4-0002", "4.0", "Target two."),
    ]
    lst = tmp_path / "my.lst"
    lst.write_text("".join("\t".join(r) + "\n" for r in rows))
    root = tmp_path / "test-clean"
    for utt in ("1-2-0002", "3-4-0002"):  # no original prompt recordings at all
        librispeech_file(root, utt)
    enhanced = tmp_path / "enhanced"
    write_tone(enhanced / "1-2-0001.wav", seconds=0.3, sample_rate=24000)
    write_tone(enhanced / "3-4-0001.flac", seconds=0.4)
    testset = load_testset("librispeech_pc", list_path=lst, librispeech_root=root, prompt_dir=enhanced)
    first, second = testset.items
    assert first.prompt_audio == enhanced / "1-2-0001.wav"
    assert second.prompt_audio == enhanced / "3-4-0001.flac"
    assert first.reference_audio == root / "1" / "2" / "1-2-0002.flac" and testset.missing == []
    assert load_prompt_audio(first).shape[-1] == int(0.3 * SAMPLE_RATE)  # the whole file is the prompt
    # a missing file is an error that names the item, not an item left out
    (enhanced / "3-4-0001.flac").unlink()
    with pytest.raises(TestSetError, match=r"my.lst:2: item 3-4-0002: no prompt file 3-4-0001.wav or "):
        load_librispeech_pc(lst, root, prompt_dir=enhanced)
    with pytest.raises(FileNotFoundError, match="prompt_dir not found"):
        load_librispeech_pc(lst, root, prompt_dir=tmp_path / "nowhere")


def test_seed_tts_meta(tmp_path):
    bench = tmp_path / "seedtts_testset" / "en"
    write_tone(bench / "prompt-wavs" / "a.wav")
    write_tone(bench / "prompt-wavs" / "b.wav")
    write_tone(bench / "wavs" / "b_gt.wav")
    elsewhere = write_tone(tmp_path / "other" / "c.wav")
    meta = bench / "meta.lst"
    meta.write_text(
        "utt_a|Prompt text A.|prompt-wavs/a.wav|Say this, A.\r\n"
        "\n"
        "utt_b|Prompt text B.|prompt-wavs/b.wav|Say this, B.|wavs/b_gt.wav\n"
        f"utt_c|Prompt C.|{elsewhere}|Say C.\n"
        "utt_d|Prompt D.|prompt-wavs/d.wav|Say D.\n"
    )
    testset = load_seed_tts(meta)
    assert testset.name == "seed_tts"
    a, b, c = testset.items
    assert (a.id, a.prompt_text, a.text) == ("utt_a", "Prompt text A.", "Say this, A.")
    assert a.prompt_audio == bench / "prompt-wavs" / "a.wav" and a.reference_audio is None
    assert b.reference_audio == bench / "wavs" / "b_gt.wav"
    assert c.prompt_audio == elsewhere  # absolute paths are kept
    assert testset.missing == [("utt_d", str(bench / "prompt-wavs" / "d.wav"))]
    # another audio root: every relative file is now missing, the absolute one still found
    moved = load_seed_tts(meta, audio_root=tmp_path)
    assert [i.id for i in moved.items] == ["utt_c"] and len(moved.missing) == 4


def test_seed_tts_prompts_from_a_folder_named_after_the_prompt_wavs(tmp_path):
    meta = tmp_path / "meta.lst"
    meta.write_text("utt_a|Prompt A.|prompt-wavs/a.wav|Say A.\nutt_b|Prompt B.|prompt-wavs/b.wav|Say B.\n")
    enhanced = tmp_path / "enhanced"
    write_tone(enhanced / "a.flac")
    with pytest.raises(TestSetError, match=r"meta.lst:2: item utt_b: no prompt file b.wav or b.flac"):
        load_seed_tts(meta, prompt_dir=enhanced)
    write_tone(enhanced / "b.wav")
    testset = load_testset("seed_tts", meta_path=meta, prompt_dir=enhanced)
    assert [i.prompt_audio for i in testset.items] == [enhanced / "a.flac", enhanced / "b.wav"]


def test_seed_tts_bad_line_names_file_and_line(tmp_path):
    meta = tmp_path / "meta.lst"
    meta.write_text("u1|p|a.wav|t\nu2|p|a.wav\n")
    with pytest.raises(TestSetError, match=r"meta.lst:2: expected utt\|prompt_text"):
        load_seed_tts(meta)
    with pytest.raises(FileNotFoundError, match="Seed-TTS meta file not found"):
        load_seed_tts(tmp_path / "absent.lst")


def corpus_manifest(folder: Path) -> Path:
    """Speaker a: three 3 s utterances of three 1 s sentences; speaker b: one utterance; one lost file."""
    entries = []
    for k in range(3):
        write_tone(folder / "audio" / f"a{k}.wav", seconds=3.0)
        segments = tuple(TimedSpan(f"Sentence {k}{j}.", j * 1.0, j * 1.0 + 0.9) for j in range(3))
        text = " ".join(s.text for s in segments)
        entries.append(ManifestItem(f"a{k}", f"audio/a{k}.wav", text, "a", duration=3.0, segments=segments))
    write_tone(folder / "audio" / "b0.wav", seconds=2.0)
    entries.append(ManifestItem("b0", "audio/b0.wav", "Only one.", "b", duration=2.0))
    entries.append(ManifestItem("a9", "audio/lost.wav", "Lost file.", "a", duration=2.0))
    return write_manifest(folder / "test.jsonl", entries)


def test_manifest_testset_prompts_with_another_utterance_of_the_speaker(tmp_path):
    manifest = corpus_manifest(tmp_path)
    testset = load_manifest_testset(manifest, prompt_seconds=2.5, seed=3)
    assert testset.name == "test"
    assert testset.skipped == [("b0", "speaker 'b' has no other utterance to prompt with")]
    # a9's own recording is lost; a prompt drawn from the lost file is reported the same way
    assert ("a9", str(tmp_path / "audio" / "lost.wav")) in testset.missing
    lost_prompts = {i for i, p in testset.missing if i != "a9"}
    assert {i.id for i in testset.items} | lost_prompts == {"a0", "a1", "a2"}
    assert testset.items, "with seed 3 at least one a-item draws an existing prompt"
    for item in testset.items:
        assert item.speaker == "a" and item.prompt_audio != item.reference_audio
        assert item.reference_audio == tmp_path / "audio" / f"{item.id}.wav"
        assert item.reference_duration == 3.0
        # cut after the last whole sentence within 2.5 s: sentences 0 and 1, ending at 1.9 s
        assert item.prompt_duration == pytest.approx(1.9)
        k = item.prompt_audio.stem[1]
        assert item.prompt_text == f"Sentence {k}0. Sentence {k}1."
        assert load_prompt_audio(item, 16000).shape == (1, int(1.9 * 16000))
        assert load_reference_audio(item).shape == (1, 3 * SAMPLE_RATE)


def test_manifest_testset_is_deterministic_and_order_free(tmp_path):
    manifest = corpus_manifest(tmp_path)
    reversed_manifest = tmp_path / "reversed.jsonl"
    reversed_manifest.write_text("".join(reversed(manifest.read_text().splitlines(keepends=True))))

    def prompts(path, seed):
        testset = load_manifest_testset(path, prompt_seconds=None, seed=seed)
        return {i.id: i.prompt_audio for i in testset.items}

    assert prompts(manifest, 0) == prompts(manifest, 0) == prompts(reversed_manifest, 0)
    draws = {tuple(sorted(prompts(manifest, seed).items())) for seed in range(8)}
    assert len(draws) > 1, "the seed changes which prompt is drawn"
    whole = load_manifest_testset(manifest, prompt_seconds=None).items[0]
    assert whole.prompt_duration == 3.0 and whole.prompt_text.count("Sentence") == 3


def test_load_testset_dispatch(tmp_path):
    corpus_manifest(tmp_path / "demo" / "clean")
    demo = load_testset("demo", data_dir=tmp_path / "demo", prompt_seconds=2.5)
    assert demo.name == "demo" and demo.items
    by_path = load_testset(str(tmp_path / "demo" / "clean" / "test.jsonl"), prompt_seconds=2.5)
    assert by_path.items == demo.items
    with pytest.raises(FileNotFoundError, match="demo test manifest not found"):
        load_testset("demo", data_dir=tmp_path / "nothing")
    with pytest.raises(ValueError, match="needs librispeech_root"):
        load_testset("librispeech_pc")
    with pytest.raises(ValueError, match="needs meta_path"):
        load_testset("seed_tts")
    with pytest.raises(ValueError, match="unknown test set 'libri'"):
        load_testset("libri")
    split_dir = tmp_path / "ls" / "test-clean"
    librispeech_file(split_dir, FIRST_LINE["prompt"])
    librispeech_file(split_dir, FIRST_LINE["target"])
    assert [i.id for i in load_testset("librispeech_pc", librispeech_root=split_dir).items] == [
        FIRST_LINE["target"]
    ]
