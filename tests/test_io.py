"""pockettts.io.atomic_write: the target appears whole or not at all, and no temporary file stays."""

from __future__ import annotations

import stat

import pytest

from pockettts.io import atomic_write, atomic_write_text


class WriterFailed(RuntimeError):
    pass


def _half_then_fail(tmp):
    tmp.write_text("half a fi", encoding="utf-8")
    raise WriterFailed


def test_writes_the_target_with_its_suffix_on_the_temporary_name(tmp_path):
    seen = []

    def write(tmp):
        seen.append(tmp)
        tmp.write_text("done", encoding="utf-8")

    out = atomic_write(tmp_path / "deep" / "report.json", write)
    assert out == tmp_path / "deep" / "report.json" and out.read_text(encoding="utf-8") == "done"
    # beside the target (one file system, so the rename is atomic), same suffix (format by suffix)
    assert seen[0].parent == out.parent and seen[0].suffix == ".json" and seen[0] != out
    assert sorted(p.name for p in out.parent.iterdir()) == ["report.json"]


def test_a_failing_writer_leaves_neither_target_nor_temporary_file(tmp_path):
    with pytest.raises(WriterFailed):
        atomic_write(tmp_path / "shard.safetensors", _half_then_fail)
    assert list(tmp_path.iterdir()) == []


def test_a_failing_writer_keeps_the_existing_target_intact(tmp_path):
    out = atomic_write_text(tmp_path / "results.md", "previous results\n")
    with pytest.raises(WriterFailed):
        atomic_write(out, _half_then_fail)
    assert out.read_text(encoding="utf-8") == "previous results\n"
    assert list(tmp_path.iterdir()) == [out]
    atomic_write_text(out, "new results\n")
    assert out.read_text(encoding="utf-8") == "new results\n" and list(tmp_path.iterdir()) == [out]


def test_written_files_get_the_mode_of_any_new_file_not_mkstemps_private_one(tmp_path):
    path = atomic_write_text(tmp_path / "shared.txt", "x")
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)
