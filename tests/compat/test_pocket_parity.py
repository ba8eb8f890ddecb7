"""End-to-end parity with Kyutai's ``pocket-tts`` package: its ``TTSModel`` built from its own
``english.yaml`` (2 backbone layers, random weights), saved in the released single-file layout and
loaded into ours, gives the same voice state, the same latents for the same seed and the same audio.
"""

from __future__ import annotations

import json
import re

import pytest

from pockettts.audio import load_audio
from pockettts.compat.pocket import load_pocket_tts
from pockettts.models.tts import TextToSpeech, prepare_text
from pockettts.text import Tokenizer, train_tokenizer
from tests.support import (
    assert_same_generation,
    assert_same_voice_state,
    pocket_parity_config,
    pocket_reference,
    save_pocket_model_file,
)

pytest.importorskip("pocket_tts", reason="parity needs the pocket-tts test dependency")
from pocket_tts.models.text_chunking import prepare_text_prompt  # noqa: E402

VOCAB = 64


def _build(tiny_corpus, folder, name: str = "english"):
    """(reference TTSModel, our TextToSpeech, prompt [1, T]) with the same random weights."""
    tokenizer_path = train_tokenizer([tiny_corpus / "train.jsonl"], folder / "tok", vocab_size=VOCAB)
    config = pocket_parity_config(name, tokenizer_path, VOCAB, num_layers=2)
    reference = pocket_reference(config)
    weights = save_pocket_model_file(reference, folder / "model.safetensors")
    ours_lm, ours_vae = load_pocket_tts(weights, config)
    ours = TextToSpeech(ours_lm, ours_vae, Tokenizer(tokenizer_path))
    manifest = [json.loads(line) for line in (tiny_corpus / "train.jsonl").read_text().splitlines()]
    prompt = load_audio(tiny_corpus / manifest[0]["audio"], sample_rate=24_000)  # [1, T]
    return reference, ours, prompt


@pytest.fixture(scope="module")
def models(tiny_corpus, tmp_path_factory):
    """``_build``'s models and prompt, and texts made of corpus sentences (a 64-piece tokenizer
    cannot spell arbitrary words)."""
    reference, ours, prompt = _build(tiny_corpus, tmp_path_factory.mktemp("pocket_parity"))
    manifest = [json.loads(line) for line in (tiny_corpus / "train.jsonl").read_text().splitlines()]
    sentences = sorted(
        {s for item in manifest for s in re.split(r"(?<=[.!?])\s+", item["text"]) if len(s.split()) >= 5},
        key=len,
    )
    first, second = sentences[:2]
    budget = max(len(ours.tokenizer.encode(prepare_text(t))) for t in (first, second)) + 1
    texts = [(first, 50), (f"{first} {second}", budget)]  # one chunk; two chunks (each fits alone)
    return reference, ours, prompt, texts


def test_voice_state_matches_the_reference(models):
    assert_same_voice_state(*models[:3])


def test_v1_codec_model_voice_state_matches_the_reference(tiny_corpus, tmp_path):
    """The first release (english_2026-01): 512-d encoder features feed a 1024x512 voice projection."""
    reference, ours, prompt = _build(tiny_corpus, tmp_path, "english_2026-01")
    assert ours.flow_lm.speaker_proj_weight.shape[1] == 512
    assert_same_voice_state(reference, ours, prompt)


@pytest.mark.parametrize("which", [0, 1])
def test_same_latents_and_audio_for_the_same_seed(models, which):
    reference, ours, prompt, texts = models
    text, max_tokens = texts[which]
    assert_same_generation(reference, ours, prompt, text, seed=7, max_tokens=max_tokens)


@pytest.mark.parametrize(
    "text", ["hello there", "wait,", 'he said "hi"', 'Really?"', "Is it 3.5 - or 4 -", "ok"]
)
def test_text_preparation_matches_the_reference(text):
    expected, _ = prepare_text_prompt(text, pad_with_spaces_for_short_inputs=False, remove_semicolons=False)
    assert prepare_text(text) == expected
