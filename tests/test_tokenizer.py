"""SentencePiece tokenizer: training on manifests, loading, encoding through the shared normalisation."""

from __future__ import annotations

import json
import pickle

import pytest

from pockettts.data.cli import main
from pockettts.data.manifest import read_manifest
from pockettts.text import (
    TextError,
    Tokenizer,
    VocabularyTooLargeError,
    normalize_text,
    train_tokenizer,
)

VOCAB = 96


@pytest.fixture(scope="module")
def tokenizer_path(tiny_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("tok") / "demo"
    return train_tokenizer([tiny_corpus / "train.jsonl"], out, vocab_size=VOCAB, num_threads=1)


def test_train_writes_model_and_vocab_only(tokenizer_path):
    assert tokenizer_path.name == "demo.model"
    # The temporary training prefix is gone: only the two final files remain.
    assert sorted(p.name for p in tokenizer_path.parent.iterdir()) == ["demo.model", "demo.vocab"]
    assert len(tokenizer_path.with_suffix(".vocab").read_text().splitlines()) == VOCAB


def test_round_trip_of_a_training_sentence(tokenizer_path, tiny_corpus):
    tokenizer = Tokenizer(tokenizer_path)
    assert tokenizer.vocab_size == VOCAB and tokenizer.pad_id == VOCAB
    text = read_manifest(tiny_corpus / "train.jsonl")[0].text
    ids = tokenizer.encode(text)
    assert ids and all(0 <= i < VOCAB for i in ids)
    assert tokenizer.unk_id not in ids  # every character of the training text is covered
    assert tokenizer.decode(ids) == normalize_text(text)
    # Padding ids decode to nothing, so padded rows round-trip too.
    assert tokenizer.decode(ids + [tokenizer.pad_id] * 3) == normalize_text(text)


def test_encode_applies_the_shared_normalisation(tokenizer_path):
    tokenizer = Tokenizer(tokenizer_path)
    fancy = "\u201cWell\u201d  \u2014 it\u2019s\n fine."
    assert tokenizer.encode(fancy) == tokenizer.encode(normalize_text(fancy))
    assert tokenizer.encode(fancy) == tokenizer.encode('"Well" - it\'s fine.')


@pytest.mark.parametrize("text", ["", "   \n\t", "...", "?! --", "\u65e5\u672c\u8a9e"])
def test_unusable_text_raises_text_error_naming_it(tokenizer_path, text):
    tokenizer = Tokenizer(tokenizer_path)
    with pytest.raises(TextError) as info:
        tokenizer.encode(text)
    assert repr(text) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_decode_rejects_ids_outside_the_vocabulary(tokenizer_path):
    with pytest.raises(ValueError, match=str(VOCAB + 1)):
        Tokenizer(tokenizer_path).decode([3, VOCAB + 1])


def test_tokenizer_pickles_by_value(tokenizer_path, tmp_path):
    tokenizer = Tokenizer(tokenizer_path)
    copy = pickle.loads(pickle.dumps(tokenizer))
    assert copy.encode("Hello there.") == tokenizer.encode("Hello there.")
    assert copy.vocab_size == tokenizer.vocab_size


def test_missing_model_names_the_path(tmp_path):
    missing = tmp_path / "nope.model"
    with pytest.raises(FileNotFoundError, match="nope.model"):
        Tokenizer(missing)


def test_too_large_vocab_names_the_largest_that_works(tiny_corpus, tmp_path):
    manifests = [tiny_corpus / "train.jsonl"]
    with pytest.raises(VocabularyTooLargeError) as info:
        train_tokenizer(manifests, tmp_path / "big", vocab_size=100_000, num_threads=1)
    maximum = info.value.maximum
    assert 0 < maximum < 100_000
    assert f"at most {maximum}" in str(info.value) and "hard_vocab_limit=False" in str(info.value)
    assert list(tmp_path.iterdir()) == []  # nothing half-written
    # The size it names does work, and the soft limit stops there by itself.
    assert (
        Tokenizer(train_tokenizer(manifests, tmp_path / "max", maximum, num_threads=1)).vocab_size == maximum
    )
    soft = train_tokenizer(manifests, tmp_path / "soft", 100_000, hard_vocab_limit=False, num_threads=1)
    assert Tokenizer(soft).vocab_size <= maximum


def test_unigram_and_bad_model_type(tiny_corpus, tmp_path):
    manifests = [tiny_corpus / "train.jsonl"]
    path = train_tokenizer(manifests, tmp_path / "uni", vocab_size=80, model_type="unigram", num_threads=1)
    assert Tokenizer(path).vocab_size == 80
    with pytest.raises(ValueError, match="model_type"):
        train_tokenizer(manifests, tmp_path / "x", model_type="wordpiece")


def test_cli_trains_on_several_manifests(tiny_corpus, tmp_path, capsys):
    out = tmp_path / "tokenizers" / "demo"
    argv = ["tokenizer", "--out", str(out), "--vocab-size", "100"]
    for split in ("train", "valid"):
        argv += ["--manifest", str(tiny_corpus / f"{split}.jsonl")]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == {"model": f"{out}.model", "vocab_size": 100, "pad_id": 100}
    tokenizer = Tokenizer(f"{out}.model")
    assert main([*argv, "--vocab-size", "100000"]) == 1  # the last --vocab-size wins
    assert "at most" in capsys.readouterr().err
    valid_text = read_manifest(tiny_corpus / "valid.jsonl")[0].text
    assert tokenizer.decode(tokenizer.encode(valid_text)) == normalize_text(valid_text)
