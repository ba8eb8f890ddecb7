"""The WordNet usage-example sentence list: extraction rules, its command and the shipped file."""

import pytest

from pockettts.data.synthetic import read_sentences
from pockettts.data.wordnet_sentences import (
    WORDNET_DATA_FILES,
    WORDNET_SENTENCES,
    as_sentence,
    usage_examples,
    wordnet_sentences,
)
from pockettts.tools.__main__ import main

# Lines in WordNet 3.0's data-file format (licence header lines start with two spaces).
HEADER = '  16 THIS SOFTWARE AND DATABASE IS PROVIDED "AS IS" AND PRINCETON  '
BREATHE = (
    "00001740 29 v 04 breathe 0 take_a_breath 0 respire 0 suspire 3 021 * 00005041 v 0000 | draw air into,"
    ' and expel out of, the lungs; "I can breathe better when the air is clean"; "The patient is respiring"  '
)
NUMBERS = '00002000 29 v 01 count 0 000 | say numbers; "she counted to 10 before she answered him"  '


def test_usage_examples_skip_the_licence_header():
    assert usage_examples([HEADER, BREATHE]) == [
        "I can breathe better when the air is clean",
        "The patient is respiring",
    ]


@pytest.mark.parametrize(
    "example, expected",
    [
        ("he ran flat out to catch the bus", "He ran flat out to catch the bus."),
        ("Will this wallpaper adhere to the wall?", "Will this wallpaper adhere to the wall?"),
        ("she counted to 10 before she answered him", None),  # digits are read unpredictably
        ("seemly and forbearing...yet strong enough to resist", None),
        ("too short to read", None),
        ("a b c d e f g h i j k l m n o", None),  # 15 words > 14
    ],
)
def test_as_sentence(example, expected):
    assert as_sentence(example, min_words=6, max_words=14) == expected


def test_wordnet_sentences_from_a_dictionary_folder(tmp_path):
    for name in WORDNET_DATA_FILES:
        (tmp_path / name).write_text(f"{HEADER}\n{NUMBERS}\n", encoding="latin-1")
    (tmp_path / "data.verb").write_text(
        f"{HEADER}\n{BREATHE}\n{BREATHE.replace('I can', 'i can')}\n", encoding="latin-1"
    )
    # Case-insensitive duplicates collapse; the digit example and the 3-word one are dropped.
    assert wordnet_sentences(tmp_path, min_words=6) == ["I can breathe better when the air is clean."]
    out = tmp_path / "lists" / "wordnet.txt"
    assert main(["wordnet-sentences", "--wordnet", str(tmp_path), "--out", str(out), "--min-words", "3"]) == 0
    shorter = wordnet_sentences(tmp_path, min_words=3)  # with "The patient is respiring."
    assert len(shorter) == 2 and read_sentences(out) == shorter
    (tmp_path / "data.adv").unlink()
    with pytest.raises(FileNotFoundError, match="data.adv"):
        wordnet_sentences(tmp_path)


def test_shipped_list_is_distinct_and_follows_the_rules():
    sentences = read_sentences(WORDNET_SENTENCES)
    assert len(sentences) > 20000
    assert len({s.lower() for s in sentences}) == len(sentences)
    assert all(as_sentence(s, 6, 14) == s for s in sentences)
