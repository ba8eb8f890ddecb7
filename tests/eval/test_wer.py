"""WER and CER under both normalisers, against counts worked out by hand in each test's comments."""

from __future__ import annotations

import pytest

from pockettts.eval.wer import character_error_rate, get_normalizer, word_error_rate


def counts(result: dict) -> tuple:
    return result["substitutions"], result["deletions"], result["insertions"], result["hits"]


def test_spoken_number_against_digits():
    refs, hyps = ["He paid twenty five dollars."], ["he paid 25 dollars"]
    # whisper: both sides become "he paid $25"
    assert word_error_rate(refs, hyps, "whisper")["wer"] == 0.0
    assert character_error_rate(refs, hyps, "whisper")["cer"] == 0.0
    # plain: he paid [twenty->25] [five deleted] dollars: 1 S + 1 D over 5 words
    wer = word_error_rate(refs, hyps, "plain")
    assert counts(wer) == (1, 1, 0, 3) and wer["reference_words"] == 5
    assert wer["wer"] == pytest.approx(2 / 5)
    # characters: "twenty five" (11) -> "25" (2): 2 S + 9 D; 27 reference characters, 16 kept
    cer = character_error_rate(refs, hyps, "plain")
    assert counts(cer) == (2, 9, 0, 16) and cer["reference_chars"] == 27
    assert cer["cer"] == pytest.approx(11 / 27)


def test_apostrophes():
    # plain deletes the apostrophe: "dont stop now" on both sides
    assert word_error_rate(["Don't stop now."], ["dont stop now"], "plain")["wer"] == 0.0
    # whisper expands the contraction in the reference only: "do not" vs "dont" is 1 S + 1 D of 4 words
    expanded = word_error_rate(["Don't stop now."], ["dont stop now"], "whisper")
    assert counts(expanded) == (1, 1, 0, 2) and expanded["wer"] == pytest.approx(2 / 4)
    # and the other way round: whisper sees "do not stop now" twice; plain: "dont"->"do" + "not" inserted
    assert word_error_rate(["Don't stop now."], ["do not stop now"], "whisper")["wer"] == 0.0
    plain = word_error_rate(["Don't stop now."], ["do not stop now"], "plain")
    assert counts(plain) == (1, 0, 1, 2) and plain["wer"] == pytest.approx(2 / 3)
    # characters: "dont stop now" vs "do not stop now" is two inserted characters (" " and "o")
    cer = character_error_rate(["Don't stop now."], ["do not stop now"], "plain")
    assert counts(cer) == (0, 0, 2, 13) and cer["cer"] == pytest.approx(2 / 13)


@pytest.mark.parametrize("normalizer", ["whisper", "plain"])
def test_punctuation_and_capitals_are_not_errors(normalizer):
    refs, hyps = ["Hello, World! How ARE you?"], ["hello world how are you"]
    assert word_error_rate(refs, hyps, normalizer)["wer"] == 0.0
    assert character_error_rate(refs, hyps, normalizer)["cer"] == 0.0


def test_cer_corpus_level_and_utterance_mean_differ():
    # "cat"->"cut": 1 S of 3; "dog house"->"dog houses": 1 I of 9
    r = character_error_rate(["Cat.", "Dog house!"], ["cut", "dog houses"], "plain")
    assert counts(r) == (1, 0, 1, 11) and r["reference_chars"] == 12
    assert r["utterance_cer"] == pytest.approx([1 / 3, 1 / 9])
    assert r["cer"] == pytest.approx(2 / 12)
    assert r["mean_utterance_cer"] == pytest.approx((1 / 3 + 1 / 9) / 2)
    assert r["normalizer"] == "plain"


def test_empty_hypothesis_deletes_everything():
    wer = word_error_rate(["hello world"], [""], "plain")
    cer = character_error_rate(["hello world"], [""], "plain")
    assert counts(wer) == (0, 2, 0, 0) and wer["wer"] == 1.0
    assert counts(cer) == (0, 11, 0, 0) and cer["cer"] == 1.0


@pytest.mark.parametrize("score", [word_error_rate, character_error_rate])
def test_bad_input_is_rejected_with_a_clear_error(score):
    with pytest.raises(ValueError, match=r"reference 1 \('\.\.\.'\) is empty"):
        score(["fine", "..."], ["fine", "x"], "plain")
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        score(["a", "b"], ["a"], "plain")
    with pytest.raises(TypeError, match="lists of texts"):
        score("a b", "a b", "plain")
    with pytest.raises(ValueError, match="unknown normalizer"):
        score(["a"], ["a"], "f5")


def test_plain_normalizer_is_the_f5_rule():
    # lowercase, every punctuation mark gone (Unicode ones too), spaces collapsed; digits untouched
    text = "  “It’s 5 o'clock,”  she said — SMILING. "
    assert get_normalizer("plain")(text) == "its 5 oclock she said smiling"


def test_wer_corpus_level_and_utterance_mean_differ():
    refs = ["The cat sat on the mat.", "Hello, world!", "It's a fine day"]
    hyps = ["the cat sat on a mat", "hello big world", "its fine day"]
    # [the->a] of 6; "big" inserted of 2; "a" deleted of 4 ("it's" -> "its" on both sides)
    r = word_error_rate(refs, hyps, normalizer="plain")
    assert counts(r) == (1, 1, 1, 10) and r["reference_words"] == 12
    assert r["wer"] == pytest.approx(3 / 12)
    assert r["utterance_wer"] == pytest.approx([1 / 6, 1 / 2, 1 / 4])
    assert r["mean_utterance_wer"] == pytest.approx((1 / 6 + 1 / 2 + 1 / 4) / 3)


def test_whisper_normalizer_forgives_abbreviations_and_numbers_plain_does_not():
    refs, hyps = ["Mr. Smith has twenty-one cats."], ["mister smith has 21 cats"]
    assert word_error_rate(refs, hyps, "whisper")["wer"] == 0.0
    # plain: [mr->mister] smith has [twentyone->21] cats: 2 S over 5 words
    plain = word_error_rate(refs, hyps, "plain")
    assert counts(plain)[:3] == (2, 0, 0) and plain["wer"] == pytest.approx(2 / 5)


def test_whisper_normalizer_spelling_and_numbers():
    # whisper: "colour" -> "color", "ten" -> "10"; "blue" deleted, "green" inserted over 7 words
    r = word_error_rate(["Colour me blue", "We need ten apples."], ["color me", "we need 10 green apples"])
    assert counts(r) == (0, 1, 1, 6) and r["wer"] == pytest.approx(2 / 7)
