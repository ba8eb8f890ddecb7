"""Prompt/target cuts of a training item: at word boundaries, with a capped prompt, and without
an alignment."""

from __future__ import annotations

import random

from pockettts.data.examples import CutConfig, cut_item
from pockettts.data.manifest import ManifestItem, TimedSpan


def _item(words: list[tuple[str, float, float]] | None, duration: float = 6.0) -> ManifestItem:
    spans = [TimedSpan(text, start, end) for text, start, end in words] if words else None
    return ManifestItem(id="a", audio="a.wav", text="one two three four five", duration=duration, words=spans)


WORDS = [("one", 0.2, 0.8), ("two", 1.0, 1.6), ("three", 1.9, 2.5), ("four", 2.8, 3.4), ("five", 3.7, 4.3)]


def test_cuts_fall_between_words_and_keep_the_rest_of_the_text():
    config = CutConfig(max_voice_prompt_sec=5.0, min_cut_sec=1.0, trail_sec=0.2)
    seen = set()
    for seed in range(40):
        cut = cut_item(_item(WORDS), n_frames=75, frame_rate=12.5, rng=random.Random(seed), config=config)
        seen.add(cut.text)
        assert cut.prompt[1] == cut.target[0] and cut.prompt[0] == 0
        assert cut.target[1] == round((4.3 + 0.2) * 12.5)  # trailing silence trimmed after the last word
        first_word = cut.text.split()[0]
        start = dict((w, s) for w, s, _ in WORDS)[first_word]
        assert cut.target[0] / 12.5 <= start  # the cut precedes the first word of the text
    assert seen == {"three four five", "four five"}  # >= 1 s of speech on both sides


def test_prompt_length_is_capped_and_zero_means_whole_prefix():
    words = [(f"w{i}", i * 1.0 + 0.1, i * 1.0 + 0.8) for i in range(10)]
    capped = CutConfig(max_voice_prompt_sec=2.0)
    for seed in range(20):
        cut = cut_item(_item(words, 11.0), 137, 12.5, random.Random(seed), capped)
        assert (cut.prompt[1] - cut.prompt[0]) / 12.5 <= 2.0 + 1e-6
    full = cut_item(_item(words, 11.0), 137, 12.5, random.Random(0), CutConfig(max_voice_prompt_sec=0))
    assert full.prompt[0] == 0


def test_without_alignment_the_prompt_is_a_window_and_the_target_everything():
    cut = cut_item(_item(None), n_frames=75, frame_rate=12.5, rng=random.Random(0), config=CutConfig())
    assert cut.text == "one two three four five" and cut.target == (0, 75)
    assert cut.prompt[1] - cut.prompt[0] == round(5.0 * 12.5)
