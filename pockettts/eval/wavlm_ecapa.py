"""The speaker model of the literature's SIM-o: WavLM Large features into an ECAPA-TDNN head.

Seed-TTS-eval and F5-TTS score speaker similarity with UniSpeech's speaker-verification model
``ECAPA_TDNN_SMALL(feat_dim=1024, feat_type="wavlm_large")`` and its fine-tuned weights
``wavlm_large_finetune.pth`` (linked from the seed-tts-eval README): WavLM Large (through s3prl)
turns 16 kHz audio into 25 hidden states (the input of each of the 24 transformer layers, and the
encoder's normalised output), a learnt softmax mixes them, an instance norm and the ECAPA-TDNN
head (:mod:`pockettts.eval.ecapa_tdnn`) give a 256-d embedding, and SIM is the cosine of two.

Here WavLM is torchaudio's implementation, and the released file (a dict whose ``"model"`` entry
is the state dict of UniSpeech's module) is read by renaming its keys onto these modules
(:data:`RELEASED_NAMES`; the query, key and value projections, separate there, are fused here).
Keys the released file holds for training only (the classifier of the speaker-verification loss,
WavLM's mask embedding) are skipped; any other difference is an error that names the keys.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn.functional as F
import torchaudio
from torch import Tensor, nn

from pockettts.eval.ecapa_tdnn import BLOCK_DILATIONS, EcapaTdnn

# released-name prefix -> our prefix; "*" is a layer index, the same on both sides
_WAVLM = "feature_extract.model."
_LAYER = _WAVLM + "encoder.layers.*."
_OUR_LAYER = "wavlm.encoder.transformer.layers.*."
_OUR_POS_CONV = "wavlm.encoder.transformer.pos_conv_embed.conv."
RELEASED_NAMES: tuple[tuple[str, str], ...] = (
    (_WAVLM + "feature_extractor.conv_layers.*.0.", "wavlm.feature_extractor.conv_layers.*.conv."),
    (_WAVLM + "feature_extractor.conv_layers.*.2.1.", "wavlm.feature_extractor.conv_layers.*.layer_norm."),
    (_WAVLM + "layer_norm.", "wavlm.encoder.feature_projection.layer_norm."),
    (_WAVLM + "post_extract_proj.", "wavlm.encoder.feature_projection.projection."),
    # weight norm: the released g and v are torch's weight_norm magnitude and direction
    (_WAVLM + "encoder.pos_conv.0.weight_g", _OUR_POS_CONV + "parametrizations.weight.original0"),
    (_WAVLM + "encoder.pos_conv.0.weight_v", _OUR_POS_CONV + "parametrizations.weight.original1"),
    (_WAVLM + "encoder.pos_conv.0.bias", _OUR_POS_CONV + "bias"),
    (_WAVLM + "encoder.layer_norm.", "wavlm.encoder.transformer.layer_norm."),
    *((_LAYER + f"self_attn.{p}_proj.", _OUR_LAYER + f"attention.{p}_proj.") for p in "qkv"),  # fused below
    (_LAYER + "self_attn.out_proj.", _OUR_LAYER + "attention.attention.out_proj."),
    (_LAYER + "self_attn.grep_linear.", _OUR_LAYER + "attention.gru_rel_pos_linear."),
    (_LAYER + "self_attn.grep_a", _OUR_LAYER + "attention.gru_rel_pos_const"),
    (_LAYER + "self_attn.relative_attention_bias.", _OUR_LAYER + "attention.rel_attn_embed."),
    (_LAYER + "self_attn_layer_norm.", _OUR_LAYER + "layer_norm."),
    (_LAYER + "fc1.", _OUR_LAYER + "feed_forward.intermediate_dense."),
    (_LAYER + "fc2.", _OUR_LAYER + "feed_forward.output_dense."),
    (_LAYER + "final_layer_norm.", _OUR_LAYER + "final_layer_norm."),
    ("feature_weight", "layer_weights"),
    ("layer1.conv.", "head.frame.conv."),
    ("layer1.bn.", "head.frame.norm."),
    *(
        (f"layer{number}.{theirs}", f"head.blocks.{number - 2}.{ours}")  # their layer2..4
        for number in range(2, 2 + len(BLOCK_DILATIONS))
        for theirs, ours in (
            ("Conv1dReluBn1.conv.", "expand.conv."),
            ("Conv1dReluBn1.bn.", "expand.norm."),
            ("Res2Conv1dReluBn.convs.*.", "res2.convs.*."),
            ("Res2Conv1dReluBn.bns.*.", "res2.norms.*."),
            ("Conv1dReluBn2.conv.", "project.conv."),
            ("Conv1dReluBn2.bn.", "project.norm."),
            ("SE_Connect.linear1.", "excite.squeeze."),
            ("SE_Connect.linear2.", "excite.expand."),
        )
    ),
    ("conv.", "head.merge."),
    ("pooling.linear1.", "head.pool.attention_hidden."),
    ("pooling.linear2.", "head.pool.attention_out."),
    ("bn.", "head.pool_norm."),
    ("linear.", "head.embedding."),
)  # fmt: skip
# in the released file for training only: the speaker classifier of the AAM-softmax loss, the
# embedding WavLM puts in masked frames during pre-training
TRAINING_ONLY = ("loss_calculator.", _WAVLM + "mask_emb")
_QKV = re.compile(r"^(.*\.attention\.)([qkv])_proj\.(weight|bias)$")
_FUSED = re.compile(r"^(.*\.attention\.)attention\.in_proj_(weight|bias)$")
RELEASED_FILE = "wavlm_large_finetune.pth"
WEIGHTS_HINT = (
    f"{RELEASED_FILE}, the WavLM Large speaker-verification checkpoint of the seed-tts-eval README "
    "(github.com/BytedanceSpeech/seed-tts-eval, 'model link' under Metrics; the same file as the "
    "'WavLM large' row with 'Fix pre-train: No' in microsoft/UniSpeech "
    "downstreams/speaker_verification/README.md), downloaded where a network exists"
)


class SpeakerCheckpointError(ValueError):
    """A speaker-model checkpoint whose keys or shapes do not fit the model; the message names them."""


def wavlm_large() -> nn.Module:
    """torchaudio's WavLM Large, the feature model of the released checkpoint."""
    return torchaudio.models.wavlm_large()


class WavLMEcapa(nn.Module):
    """16 kHz waveforms ``[B, T]`` -> speaker embeddings ``[B, embedding_dim]`` (not normalised).

    ``wavlm`` is a torchaudio WavLM (:func:`wavlm_large` for the released checkpoint; tests use a
    small one); ``normalize_waveform`` standardises each waveform first, as WavLM Large was trained.
    """

    def __init__(self, wavlm: nn.Module, normalize_waveform: bool = True, channels: int = 512,
                 merged_channels: int = 1536, embedding_dim: int = 256):  # fmt: skip
        super().__init__()
        self.wavlm = wavlm
        self.normalize_waveform = normalize_waveform
        feature_dim = wavlm.encoder.feature_projection.projection.out_features
        # one weight per hidden state: the input of each transformer layer, and the encoder output
        self.layer_weights = nn.Parameter(torch.zeros(len(wavlm.encoder.transformer.layers) + 1))
        self.feature_norm = nn.InstanceNorm1d(feature_dim)
        self.head = EcapaTdnn(feature_dim, channels, merged_channels, embedding_dim)

    def hidden_states(self, waveform: Tensor) -> Tensor:
        """``[B, T]`` -> ``[L + 1, B, frames, D]``: what s3prl's WavLM expert calls its hidden states
        (the input of each of the L layers, then the encoder output, normalised in a pre-norm model)."""
        if self.normalize_waveform:
            waveform = F.layer_norm(waveform, waveform.shape[-1:])
        features, _ = self.wavlm.feature_extractor(waveform, None)
        x = self.wavlm.encoder.feature_projection(features)
        transformer = self.wavlm.encoder.transformer
        x = x + transformer.pos_conv_embed(x)
        # torchaudio's Transformer.layer_norm_first is True for post-norm models: normalise the input
        if transformer.layer_norm_first:
            x = transformer.layer_norm(x)
        states, position_bias = [x], None
        for layer in transformer.layers:
            x, position_bias = layer(x, position_bias=position_bias)
            states.append(x)
        if not transformer.layer_norm_first:
            states[-1] = transformer.layer_norm(x)
        return torch.stack(states)

    def forward(self, waveform: Tensor) -> Tensor:
        weights = torch.softmax(self.layer_weights, dim=0)
        mixed = (weights[:, None, None, None] * self.hidden_states(waveform)).sum(dim=0)  # [B, frames, D]
        return self.head(self.feature_norm(mixed.transpose(1, 2) + 1e-6))


def _rename(name: str, pairs: list[tuple[re.Pattern, str]]) -> str | None:
    for pattern, replacement in pairs:
        match = pattern.match(name)
        if match:
            return match.expand(replacement) + name[match.end() :]
    return None


def _compiled(pairs) -> list[tuple[re.Pattern, str]]:
    """``(source prefix, target prefix)`` pairs as ``(pattern, replacement)``, ``*`` a layer index."""
    index = r"(\d+)"
    return [(re.compile("^" + re.escape(a).replace(r"\*", index)), b.replace("*", r"\1")) for a, b in pairs]


_FROM_RELEASED = _compiled(RELEASED_NAMES)
_TO_RELEASED = _compiled((ours, theirs) for theirs, ours in RELEASED_NAMES)


def to_released(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Our state dict in the released checkpoint's names (fused attention projections split)."""
    split = {}
    for name, value in state.items():
        fused = _FUSED.match(name)
        if fused:
            for part, chunk in zip("qkv", value.chunk(3, dim=0)):
                split[f"{fused[1]}{part}_proj.{fused[2]}"] = chunk
        else:
            split[name] = value
    renamed = {_rename(name, _TO_RELEASED): value for name, value in split.items()}
    if None in renamed:
        raise KeyError("a parameter of the model has no released name: RELEASED_NAMES is incomplete")
    return renamed


def from_released(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A released state dict (its keys already checked) in our names, q/k/v projections fused."""
    ours, projections = {}, {}
    for name, value in state.items():
        renamed = _rename(name, _FROM_RELEASED)
        qkv = _QKV.match(renamed)
        if qkv:
            projections.setdefault((qkv[1], qkv[3]), {})[qkv[2]] = value
        else:
            ours[renamed] = value
    for (prefix, kind), parts in projections.items():
        ours[f"{prefix}attention.in_proj_{kind}"] = torch.cat([parts[p] for p in "qkv"])
    return ours


def _show(names: list[str]) -> str:
    return ", ".join(names[:6]) + (f" ... ({len(names)} in all)" if len(names) > 6 else "")


def check_released_state(model: WavLMEcapa, state: dict[str, Tensor], path: Path) -> dict[str, Tensor]:
    """``state`` without its training-only keys, after checking that it holds exactly the model's
    keys in the released names with the model's shapes (BatchNorm's batch counters may be absent)."""
    expected = to_released(model.state_dict())
    state = {k: v for k, v in state.items() if not k.startswith(TRAINING_ONLY)}
    missing = sorted(k for k in expected.keys() - state.keys() if not k.endswith("num_batches_tracked"))
    unexpected = sorted(state.keys() - expected.keys())
    mismatched = sorted(
        f"{k} {tuple(state[k].shape)} (expected {tuple(expected[k].shape)})"
        for k in expected.keys() & state.keys()
        if state[k].shape != expected[k].shape
    )
    found = {"missing keys": missing, "unexpected keys": unexpected, "wrong shapes": mismatched}
    problems = [f"{label}: {_show(names)}" for label, names in found.items() if names]
    if problems:
        raise SpeakerCheckpointError(
            f"{path} is not in the layout of {RELEASED_FILE} ({'; '.join(problems)})"
        )
    return state


def load_wavlm_ecapa(path: str | Path, wavlm: nn.Module | None = None) -> WavLMEcapa:
    """The released checkpoint at ``path`` (a dict with its state dict under ``"model"``) in a
    :class:`WavLMEcapa` over ``wavlm`` (default: :func:`wavlm_large`), in eval mode."""
    path = Path(path)
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(loaded, dict) or not isinstance(loaded.get("model"), dict):
        expected = f"a dict with the state dict under 'model', as {WEIGHTS_HINT}"
        raise SpeakerCheckpointError(f"{path}: expected {expected}")
    model = WavLMEcapa(wavlm if wavlm is not None else wavlm_large())
    model.load_state_dict(from_released(check_released_state(model, loaded["model"], path)), strict=False)
    return model.eval()
