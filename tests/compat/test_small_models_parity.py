"""The 2026-10 small models (``english_18m/7m/2m[_refl]_2026-10``) and ``english_drifting_26-09`` against
Kyutai's ``pocket-tts`` 4.0.1, built from the package's own yamls with random weights.

* Every released config converts both ways: our FlowLM and codec have the package's tensors, shape for
  shape, hence its parameter counts (pinned below at the released vocabulary of 4000 pieces), and the
  configs we write for them build the same package models.
* End to end, for the three sizes at full size (and the drifting model with 2 of its 6 layers): a
  model file of the package's loads into ours with the same voice state, the same latents and the
  same audio for the same seed; our export of it loads in the package and speaks the same.
"""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from pockettts.audio import load_audio
from pockettts.compat.flow_lm import (
    flow_lm_config_from_pocket,
    flow_lm_config_to_pocket,
    flow_lm_to_pocket_state_dict,
)
from pockettts.compat.mimi import mimi_config_from_vae, vae_config_from_mimi, vae_to_mimi_state_dict
from pockettts.compat.pocket import load_pocket_tts, save_pocket_tts
from pockettts.models.flow_lm import FlowLM
from pockettts.models.tts import TextToSpeech, prepare_text
from pockettts.models.vae import AudioVAE
from pockettts.text import Tokenizer, train_tokenizer
from tests.support import (
    assert_same_generation,
    assert_same_voice_state,
    pocket_model,
    pocket_parity_config,
    pocket_reference,
    save_pocket_model_file,
)

pytest.importorskip("pocket_tts", reason="parity needs the pocket-tts test dependency")
from pocket_tts.models.flow_lm import FlowLMModel  # noqa: E402
from pocket_tts.models.mimi import build_mimi  # noqa: E402
from pocket_tts.utils.config import CONFIGS_DIR, FlowLMConfig, MimiConfig  # noqa: E402

SMALL = ("english_18m_2026-10", "english_7m_2026-10", "english_2m_2026-10")
RELEASED = (*SMALL, *(name.replace("_2026", "_refl_2026") for name in SMALL), "english_drifting_26-09")
# Parameters at the released size: (FlowLM, codec decoder side, codec encoder side). The decoder side
# is what generation runs (quantizer, upsample, decoder transformer and SEANet); the encoder side
# only encodes voice prompts. The _refl models are fine-tuned copies of the same shapes.
PARAMETERS = {
    "english_18m_2026-10": (15_556_737, 2_617_233, 9_749_024),
    "english_7m_2026-10": (4_245_345, 2_617_233, 9_749_024),
    "english_2m_2026-10": (881_137, 1_041_709, 9_749_024),
    "english_drifting_26-09": (88_657_985, 10_305_313, 9_749_024),
}
DECODER_SIDE = ("quantizer.", "upsample.", "decoder_transformer.", "decoder.")
# Our bottleneck's log-variance head trains the VAE; the package's codec is deterministic.
TRAINING_ONLY = ("quantizer.logvar_proj.weight", "quantizer.logvar_param")
VOCAB = 64  # end to end: a tokenizer trained on the demo corpus


def _shapes(tensors: dict[str, torch.Tensor], prefix: str = "") -> dict[str, tuple[int, ...]]:
    return {name.removeprefix(prefix): tuple(t.shape) for name, t in tensors.items()}


def _pocket_flow_lm(section: dict, voice_dim: int) -> FlowLMModel:
    """The package's FlowLM for a ``flow_lm`` yaml section, on the meta device (shapes only), with
    the voice projection its ``TTSModel`` adds."""
    config = FlowLMConfig(**section)
    with torch.device("meta"):
        model = FlowLMModel.from_pydantic_config(config, 32, config.insert_bos_before_voice)
        model.speaker_proj_weight = torch.nn.Parameter(torch.empty(config.transformer.d_model, voice_dim))
    return model


def _codec_sides(named: dict[str, int]) -> tuple[int, int]:
    """(decoder side, encoder side) parameter counts of ``{name: numel}`` in the package's names."""
    decoder = sum(n for name, n in named.items() if name.startswith(DECODER_SIDE))
    return decoder, sum(named.values()) - decoder


@pytest.fixture(scope="module")
def released_vocabulary(tmp_path_factory):
    """A 4000-piece ``tokenizer.json`` (the released vocabulary size), so that the text tables have
    their released shapes; the package then reads it with its ``tokenizers`` backend."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models

    path = tmp_path_factory.mktemp("vocabulary") / "tokenizer.json"
    HFTokenizer(models.WordLevel({f"w{i}": i for i in range(4000)}, unk_token="w0")).save(str(path))
    return path


@pytest.mark.parametrize("name", RELEASED)
def test_released_config_converts_both_ways_with_the_packages_parameters(name, released_vocabulary):
    config = yaml.safe_load((CONFIGS_DIR / f"{name}.yaml").read_text())
    config["flow_lm"]["lookup_table"].update(tokenizer="tokenizers", tokenizer_path=str(released_vocabulary))
    voice_dim = config["mimi"]["inner_dim"]
    reference_lm = _pocket_flow_lm(config["flow_lm"], voice_dim)
    with torch.device("meta"):
        ours_lm = FlowLM(**flow_lm_config_from_pocket(config["flow_lm"], voice_dim=voice_dim))
    assert ours_lm.config["head"]["kind"] == config["flow_lm"]["flow"]["type"]
    reference_shapes = _shapes(reference_lm.state_dict())
    assert _shapes(flow_lm_to_pocket_state_dict(ours_lm), "flow_lm.") == reference_shapes
    reference_mimi = build_mimi(MimiConfig(**config["mimi"]))
    ours_vae = AudioVAE(**vae_config_from_mimi(config["mimi"]))
    assert _shapes(vae_to_mimi_state_dict(ours_vae), "mimi.") == _shapes(reference_mimi.state_dict())

    flow_lm_parameters = sum(p.numel() for p in reference_lm.parameters())
    inference = [p for n, p in ours_lm.named_parameters() if not n.startswith("head.") or ".flow_net." in n]
    assert sum(p.numel() for p in inference) == flow_lm_parameters
    reference_sides = _codec_sides({n: p.numel() for n, p in reference_mimi.named_parameters()})
    assert _codec_sides({n: p.numel() for n, p in ours_vae.named_parameters() if n not in TRAINING_ONLY}) == (
        reference_sides
    )
    assert (flow_lm_parameters, *reference_sides) == PARAMETERS[name.replace("_refl", "")]

    # What we write for these models builds the same package models.
    written_lm = flow_lm_config_to_pocket(ours_lm, str(released_vocabulary), "tokenizers")
    assert _shapes(_pocket_flow_lm(written_lm, voice_dim).state_dict()) == reference_shapes
    assert written_lm["flow"]["type"] == config["flow_lm"]["flow"]["type"]
    written_mimi = build_mimi(MimiConfig(**mimi_config_from_vae(ours_vae)))
    assert _shapes(written_mimi.state_dict()) == _shapes(reference_mimi.state_dict())


# -- end to end ----------------------------------------------------------------------------------------

# The drifting model is 100M-sized: 2 of its 6 layers keep the test fast (as the 100M parity test).
END_TO_END = [pytest.param((name, None), id=name) for name in SMALL] + [
    pytest.param(("english_drifting_26-09", 2), id="english_drifting_26-09", marks=pytest.mark.slow)
]


@pytest.fixture(scope="module")
def corpus_text(tiny_corpus, tmp_path_factory):
    """(tokenizer path, a 2 s voice prompt [1, T], three words of a corpus sentence): a 64-piece
    tokenizer cannot spell arbitrary words, and a short prompt and text keep generation short."""
    tokenizer_path = train_tokenizer(
        [tiny_corpus / "train.jsonl"], tmp_path_factory.mktemp("small_parity") / "tok", vocab_size=VOCAB
    )
    manifest = [json.loads(line) for line in (tiny_corpus / "train.jsonl").read_text().splitlines()]
    prompt = load_audio(tiny_corpus / manifest[0]["audio"], sample_rate=24_000)[:, : 2 * 24_000]
    return tokenizer_path, prompt, " ".join(manifest[0]["text"].split()[:3])


@pytest.fixture(scope="module", params=END_TO_END)
def parity(request, corpus_text, tmp_path_factory):
    """(name, config, reference TTSModel, our TextToSpeech, prompt, text) with the same random weights."""
    name, num_layers = request.param
    tokenizer_path, prompt, text = corpus_text
    folder = tmp_path_factory.mktemp(name)
    config = pocket_parity_config(name, tokenizer_path, VOCAB, num_layers=num_layers)
    reference = pocket_reference(config)
    flow_lm, vae = load_pocket_tts(save_pocket_model_file(reference, folder / "model.safetensors"), config)
    return name, config, reference, TextToSpeech(flow_lm, vae, Tokenizer(tokenizer_path)), prompt, text


def _max_tokens(ours: TextToSpeech, text: str) -> int:
    return len(ours.tokenizer.encode(prepare_text(text))) + 1  # one chunk


def test_voice_state_matches_the_reference(parity):
    _, _, reference, ours, prompt, _ = parity
    assert_same_voice_state(reference, ours, prompt)


def test_same_latents_and_audio_for_the_same_seed(parity):
    _, _, reference, ours, prompt, text = parity
    generation = assert_same_generation(
        reference, ours, prompt, text, seed=7, max_tokens=_max_tokens(ours, text)
    )
    assert generation.audio.abs().max() > 1e-3


def test_our_export_loads_in_the_package_and_speaks_the_same(parity, tmp_path):
    """``save_pocket_tts`` writes the file the package's own loader reads (strictly), and the package
    then generates what we do."""
    name, config, _, ours, prompt, text = parity
    exported = save_pocket_tts(ours.flow_lm, ours.vae, tmp_path / "ours.safetensors")
    from_ours = pocket_model({**config, "weights_path": str(exported)})
    assert_same_generation(from_ours, ours, prompt, text, seed=11, max_tokens=_max_tokens(ours, text))
