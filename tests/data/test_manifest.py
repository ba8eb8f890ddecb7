import json

import pytest

from pockettts.data.manifest import (
    ManifestAppender,
    ManifestError,
    ManifestItem,
    TimedSpan,
    iter_manifest_lines,
    read_manifest,
    write_manifest,
)


def test_round_trip_keeps_every_field(tmp_path):
    item = ManifestItem(
        id="a",
        audio="x.wav",
        text="Hi there.",
        speaker="s1",
        language="fr",
        offset=1.5,
        duration=2.0,
        segments=(TimedSpan("Hi there.", 0.1, 1.9),),
        words=(TimedSpan("Hi", 0.1, 0.5),),
    )
    write_manifest(tmp_path / "m.jsonl", [item, ManifestItem(id="b", audio="y.wav", text="Yo.")])
    back = read_manifest(tmp_path / "m.jsonl")
    assert back[0] == item
    assert back[1].duration is None and back[1].speaker == "unknown"
    assert "words" not in json.loads((tmp_path / "m.jsonl").read_text().splitlines()[1])


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"id": "a", "audio": "x.wav"}', "missing required field 'text'"),
        ('{"id": "a", "audio": "x.wav", "text": "t", "speeker": "s"}', r"unknown field\(s\) \['speeker'\]"),
        ('{"id": "a", "audio": "x.wav", "text": "t", "offset": "1"}', "'offset' must be a number"),
        ('{"id": "a", "audio": "x.wav", "text": "t", "words": [{"word": "t"}]}', "expected"),
        ("{not json", "Expecting property name"),
    ],
)
def test_schema_violations_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "m.jsonl"
    path.write_text('{"id": "ok", "audio": "x.wav", "text": "fine"}\n' + line + "\n")
    with pytest.raises(ManifestError, match=message) as err:
        read_manifest(path)
    assert f"{path}:2:" in str(err.value)


def test_appender_recovers_from_a_torn_last_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"id": "a", "audio": "a.wav", "text": "one"}\n{"id": "b", "aud')
    with ManifestAppender(path) as sink:
        assert sink.existing_ids() == {"a"}
        sink.append(ManifestItem(id="c", audio="c.wav", text="three"))
    entries = [e for _, e in iter_manifest_lines(path)]
    assert [e.id for e in entries] == ["a", "c"]
