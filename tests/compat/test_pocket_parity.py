"""End-to-end parity with Kyutai's ``pocket-tts`` package: its ``TTSModel`` built from its own
``english.yaml`` (2 backbone layers, random weights), saved in the released single-file layout and
loaded into ours, gives the same voice state, the same latents for the same seed and the same audio.
"""

from __future__ import annotations

import json
import re

import pytest
import torch
import yaml
from safetensors.torch import save_file

from pockettts.audio import load_audio
from pockettts.compat.pocket import load_pocket_tts
from pockettts.models.sampling import SamplingOptions
from pockettts.models.tts import TextToSpeech, prepare_text
from pockettts.text import Tokenizer, train_tokenizer

pytest.importorskip("pocket_tts", reason="parity needs the pocket-tts test dependency")
from pocket_tts.models.text_chunking import prepare_text_prompt  # noqa: E402
from pocket_tts.models.tts_model import TTSModel  # noqa: E402
from pocket_tts.utils.config import CONFIGS_DIR, Config  # noqa: E402

VOCAB = 64


def _config(tokenizer_path, name: str = "english") -> dict:
    config = yaml.safe_load((CONFIGS_DIR / f"{name}.yaml").read_text())
    config.pop("weights_path", None)
    config.pop("weights_path_without_voice_cloning", None)
    config["flow_lm"]["transformer"]["num_layers"] = 2
    config["flow_lm"]["lookup_table"].update(
        n_bins=VOCAB, tokenizer="sentencepiece", tokenizer_path=str(tokenizer_path)
    )
    config["flow_lm"]["weights_path"] = config["mimi"]["weights_path"] = None
    return config


def _build(tiny_corpus, folder, name: str = "english"):
    """(reference TTSModel, our TextToSpeech, prompt [1, T]) with the same random weights."""
    tokenizer_path = train_tokenizer([tiny_corpus / "train.jsonl"], folder / "tok", vocab_size=VOCAB)
    config = _config(tokenizer_path, name)
    torch.manual_seed(0)
    reference = TTSModel._from_pydantic_config_with_weights(
        Config(**config), temp=0.3, sampler_decode_steps=1, noise_clamp=None, eos_threshold=-4.0
    )
    flow_lm = reference.flow_lm
    with torch.no_grad():  # zero-initialised parts (voice projection, head output) would hide bugs
        flow_lm.speaker_proj_weight.normal_(0.0, 0.05)
        for name, param in flow_lm.named_parameters():
            if name.startswith("flow_net."):
                param.normal_(0.0, 0.05)
        flow_lm.emb_mean.normal_()
        flow_lm.emb_std.uniform_(0.5, 2.0)
        # Random models are chaotic: float rounding (1e-6) would double every few frames through the
        # fed-back latents. A weaker feedback keeps it bounded; a wrong feedback still shows.
        flow_lm.input_linear.weight.mul_(0.1)
        flow_lm.out_eos.weight.zero_()
        flow_lm.out_eos.bias.fill_(-10.0)  # EOS never fires: every chunk runs its frame budget
    reference.eval()
    tensors = {f"flow_lm.{k}": v for k, v in flow_lm.state_dict().items()}
    tensors.update({f"mimi.{k}": v for k, v in reference.mimi.state_dict().items()})
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / "model.safetensors"))
    ours_lm, ours_vae = load_pocket_tts(folder / "model.safetensors", config)
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


def _reference_latents(reference, voice_state, text, seed, max_tokens):
    """The reference's generated latents (raw, as its decoder reads them) and its audio."""
    latents = []
    decode = reference.mimi.decode_from_latent

    def recording_decode(latent, state):
        latents.append(latent.clone())
        return decode(latent, state)

    reference.mimi.decode_from_latent = recording_decode
    reference.max_decoder_frames_per_call = 1  # one frame per call: same arithmetic as streaming
    try:
        torch.manual_seed(seed)
        audio = reference.generate_audio(voice_state, text, max_tokens=max_tokens, copy_state=True)
    finally:
        del reference.mimi.decode_from_latent
    return torch.cat(latents, dim=1)[0], audio


def test_voice_state_matches_the_reference(models):
    _assert_same_voice_state(*models[:3])


def test_v1_codec_model_voice_state_matches_the_reference(tiny_corpus, tmp_path):
    """The first release (english_2026-01): 512-d encoder features feed a 1024x512 voice projection."""
    reference, ours, prompt = _build(tiny_corpus, tmp_path, "english_2026-01")
    assert ours.flow_lm.speaker_proj_weight.shape[1] == 512
    _assert_same_voice_state(reference, ours, prompt)


def _assert_same_voice_state(reference, ours, prompt):
    reference_state = reference.get_state_for_audio_prompt(prompt)
    voice = ours.voice(prompt, 24_000)
    caches = [value for value in reference_state.values() if "cache" in value]
    ours_layers = voice.backbone["transformer"]
    assert len(caches) == len(ours.flow_lm.transformer.layers) == 2
    for index, cache in enumerate(caches):
        attention = ours_layers[f"layers.{index}"]["self_attn"]
        length = int(attention["length"])
        opening = 0 if ours.flow_lm.bos_before_voice is None else 1  # v1 models have none
        assert int(cache["offset"].view(-1)[0]) == length == voice.latents.shape[0] + opening
        for slot, name in enumerate(("keys", "values")):
            theirs = cache["cache"][slot, 0, :length]  # [T, H, Dh]
            mine = attention[name][0, :, :length].transpose(0, 1)
            torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("which", [0, 1])
def test_same_latents_and_audio_for_the_same_seed(models, which):
    reference, ours, prompt, texts = models
    text, max_tokens = texts[which]
    reference_latents, reference_audio = _reference_latents(
        reference, reference.get_state_for_audio_prompt(prompt), text, seed=7, max_tokens=max_tokens
    )
    options = SamplingOptions(seed=7, max_tokens=max_tokens)
    generation = ours.generate(text, ours.voice(prompt, 24_000), options)
    assert generation.latents.shape == reference_latents.shape
    torch.testing.assert_close(generation.latents, reference_latents, atol=1e-4, rtol=1e-4)
    assert generation.audio.shape == reference_audio.shape
    torch.testing.assert_close(generation.audio, reference_audio, atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "text", ["hello there", "wait,", 'he said "hi"', 'Really?"', "Is it 3.5 - or 4 -", "ok"]
)
def test_text_preparation_matches_the_reference(text):
    expected, _ = prepare_text_prompt(text, pad_with_spaces_for_short_inputs=False, remove_semicolons=False)
    assert prepare_text(text) == expected
