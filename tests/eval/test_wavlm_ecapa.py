"""The literature's SIM-o model: a checkpoint written in the released key layout loads, embeds 16 kHz
audio, and a checkpoint that does not fit is refused by name.

The fast tests run a small torchaudio WavLM under the full-size ECAPA-TDNN head; the layout test
builds WavLM Large on the meta device (no memory, no time) and checks the released names and shapes
that the public code defines: microsoft/UniSpeech ``downstreams/speaker_verification/models/
ecapa_tdnn.py`` (``ECAPA_TDNN_SMALL(feat_dim=1024, feat_type="wavlm_large")``: ``feature_weight``,
``layer1..4``, ``conv``, ``pooling``, ``bn``, ``linear``) and s3prl's WavLM (``upstream/wavlm/WavLM.py``
at 7ab62aaf, the commit the UniSpeech README pins) under ``feature_extract.model.``.
"""

from __future__ import annotations

import pytest
import torch
import torchaudio

from pockettts.eval.speaker import WavLMEcapaEmbedder, cosine_similarity
from pockettts.eval.wavlm_ecapa import (
    SpeakerCheckpointError,
    WavLMEcapa,
    check_released_state,
    from_released,
    load_wavlm_ecapa,
    to_released,
    wavlm_large,
)
from tests.support import TINY_WAVLM, speechlike

# WavLM Large's layout (layer-norm feature extractor, pre-norm transformer) at a small size
SMALL_WAVLM = {**TINY_WAVLM, "extractor_mode": "layer_norm", "encoder_layer_norm_first": True}


def small_model(seed: int = 0) -> WavLMEcapa:
    torch.manual_seed(seed)
    model = WavLMEcapa(torchaudio.models.wavlm_model(**SMALL_WAVLM))
    with torch.no_grad():  # trained-looking statistics, so that a lost buffer would show
        for name, buffer in model.named_buffers():
            if name.endswith(("running_mean", "running_var")):
                buffer.uniform_(0.5, 1.5)
        model.layer_weights.normal_()
    return model.eval()


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """``(path, model)``: a small model's weights saved as the released file is (its state dict under
    ``"model"``, with the training-only classifier that file carries)."""
    model = small_model()
    state = to_released(model.state_dict())
    state["loss_calculator.projection.weight"] = torch.randn(5994, 256)
    path = tmp_path_factory.mktemp("sv") / "wavlm_large_finetune.pth"
    torch.save({"model": state}, path)
    return path, model


def test_a_released_checkpoint_loads_and_embeds_16khz_audio(released):
    path, model = released
    embedder = WavLMEcapaEmbedder(path, wavlm=torchaudio.models.wavlm_model(**SMALL_WAVLM))
    assert embedder.name == "wavlm_ecapa"
    voice, other = (speechlike(1.0, seed=seed, sample_rate=16000)[0, 0] for seed in (1, 2))
    embedding = embedder.embed(voice, 16000)
    assert embedding.shape == (256,) and torch.linalg.norm(embedding) == pytest.approx(1.0, abs=1e-5)
    # every weight and statistic arrived: the original model gives the same embedding
    with torch.no_grad():
        expected = torch.nn.functional.normalize(model(voice[None])[0], dim=0)
    torch.testing.assert_close(embedding, expected, rtol=1e-4, atol=1e-5)
    assert cosine_similarity(embedder.embed(voice, 16000), embedding) == pytest.approx(1.0, abs=1e-6)
    assert cosine_similarity(embedder.embed(torch.sin(torch.arange(16000) * 0.3), 16000), embedding) < 0.999
    assert cosine_similarity(embedder.embed(other, 16000), embedding) < 1.0 - 1e-4
    # any rate: 24 kHz audio is resampled to the model's 16 kHz
    at_24k = torchaudio.functional.resample(voice, 16000, 24000)
    assert cosine_similarity(embedder.embed(at_24k, 24000), embedding) > 0.99


def test_the_waveform_is_standardised_as_wavlm_large_was_trained(released):
    path, _ = released
    model = load_wavlm_ecapa(path, torchaudio.models.wavlm_model(**SMALL_WAVLM))
    voice = speechlike(1.0, seed=3, sample_rate=16000)[0]
    with torch.no_grad():
        torch.testing.assert_close(model(voice), model(5.0 * voice + 0.01), rtol=1e-4, atol=1e-4)


def _save(state, tmp_path):
    path = tmp_path / "bad.pth"
    torch.save({"model": state}, path)
    return path


def test_a_checkpoint_that_does_not_fit_is_refused_by_name(released, tmp_path):
    path, _ = released
    state = torch.load(path, weights_only=True)["model"]
    wavlm = torchaudio.models.wavlm_model(**SMALL_WAVLM)

    renamed = dict(state)
    renamed["layer1.convolution.weight"] = renamed.pop("layer1.conv.weight")
    with pytest.raises(SpeakerCheckpointError) as error:
        load_wavlm_ecapa(_save(renamed, tmp_path), wavlm)
    message = str(error.value)
    assert "missing keys: layer1.conv.weight" in message
    assert "unexpected keys: layer1.convolution.weight" in message

    reshaped = {**state, "linear.weight": torch.zeros(192, 3072)}
    with pytest.raises(SpeakerCheckpointError, match=r"wrong shapes: linear.weight \(192, 3072\)"):
        load_wavlm_ecapa(_save(reshaped, tmp_path), wavlm)

    torch.save(state, tmp_path / "bare.pth")  # not under "model"
    with pytest.raises(SpeakerCheckpointError, match="state dict under 'model'"):
        load_wavlm_ecapa(tmp_path / "bare.pth", wavlm)


def test_batch_norm_counters_may_be_absent(released, tmp_path):
    path, model = released
    state = torch.load(path, weights_only=True)["model"]
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    loaded = load_wavlm_ecapa(_save(state, tmp_path), torchaudio.models.wavlm_model(**SMALL_WAVLM))
    voice = speechlike(0.5, seed=4, sample_rate=16000)[0]
    with torch.no_grad():
        torch.testing.assert_close(loaded(voice), model(voice))


# released name -> shape, from the public code named in the module docstring
RELEASED_SHAPES = {
    "feature_weight": (25,),  # 24 layer inputs + the encoder output
    "feature_extract.model.feature_extractor.conv_layers.0.0.weight": (512, 1, 10),
    "feature_extract.model.feature_extractor.conv_layers.6.0.weight": (512, 512, 2),
    "feature_extract.model.feature_extractor.conv_layers.0.2.1.weight": (512,),
    "feature_extract.model.layer_norm.weight": (512,),
    "feature_extract.model.post_extract_proj.weight": (1024, 512),
    "feature_extract.model.encoder.pos_conv.0.weight_g": (1, 1, 128),
    "feature_extract.model.encoder.pos_conv.0.weight_v": (1024, 64, 128),
    "feature_extract.model.encoder.layer_norm.bias": (1024,),
    "feature_extract.model.encoder.layers.0.self_attn.relative_attention_bias.weight": (320, 16),
    "feature_extract.model.encoder.layers.23.self_attn.q_proj.weight": (1024, 1024),
    "feature_extract.model.encoder.layers.23.self_attn.k_proj.bias": (1024,),
    "feature_extract.model.encoder.layers.23.self_attn.grep_linear.weight": (8, 64),
    "feature_extract.model.encoder.layers.23.self_attn.grep_a": (1, 16, 1, 1),
    "feature_extract.model.encoder.layers.23.self_attn_layer_norm.weight": (1024,),
    "feature_extract.model.encoder.layers.23.fc1.weight": (4096, 1024),
    "feature_extract.model.encoder.layers.23.final_layer_norm.bias": (1024,),
    "layer1.conv.weight": (512, 1024, 5),
    "layer1.bn.running_var": (512,),
    "layer2.Conv1dReluBn1.conv.weight": (512, 512, 1),
    "layer3.Res2Conv1dReluBn.convs.6.weight": (64, 64, 3),
    "layer4.Res2Conv1dReluBn.bns.6.running_mean": (64,),
    "layer4.Conv1dReluBn2.bn.weight": (512,),
    "layer4.SE_Connect.linear1.weight": (128, 512),
    "layer4.SE_Connect.linear2.weight": (512, 128),
    "conv.weight": (1536, 1536, 1),
    "pooling.linear1.weight": (128, 1536, 1),
    "pooling.linear2.weight": (1536, 128, 1),
    "bn.running_mean": (3072,),
    "linear.weight": (256, 3072),
}
# WavLM: 7 conv blocks x 3 + 2 + 2 + 3 (pos conv) + 2 + 24 layers x 19 + 1 relative bias (layer 0) = 487;
# ECAPA: 1 + 7 + 3 blocks x (7 + 7 convs x 2 + 7 norms x 5 + 7 + 4) + 2 + 4 + 5 + 2 = 222
RELEASED_KEYS = 487 + 222


def test_wavlm_large_has_the_released_layout():
    with torch.device("meta"):
        model = WavLMEcapa(wavlm_large())
    state = to_released(model.state_dict())
    assert len(state) == RELEASED_KEYS
    assert {name: tuple(state[name].shape) for name in RELEASED_SHAPES} == RELEASED_SHAPES
    assert not any("relative_attention_bias" in name for name in state if ".layers.0." not in name)
    checked = check_released_state(model, {**state, "feature_extract.model.mask_emb": state["bn.bias"]}, None)
    model.load_state_dict(from_released(checked), strict=True, assign=True)  # every key, each once
