"""Convert between our ``FlowLM`` and the released Pocket TTS FlowLM layout.

Read: the ``flow_lm.*`` tensors of a Pocket TTS model file (package layout), or Kyutai's training
layout (``condition_provider.conditioners...``, ``fuser.padding_value``, ``in_proj_weight``,
``flow.w_s_t.*``). Written: the package layout. Our head lives under ``head.`` (``head.flow_net``
is Kyutai's ``flow_net``; ``head.w_s_t`` their training-only ``flow.w_s_t``).

Heads map to Pocket TTS ``flow.type``s: LSD, flow matching, drifting and pointwise as they are; the
consistency head's one-step sampler as a "drifting" head (no time input, see
``DriftingHead.from_consistency``). The 2026-10 small models' backbone options (``transformer.attn_dim``,
``transformer.num_kv_heads``, ``z_dim``, ``lookup_table.rank``, ``transformer.dim_feedforward``) map to
``FlowLM``'s ``attn_dim``, ``num_kv_heads``, ``z_dim``, ``text_rank`` and ``dim_feedforward``; their
tensors (``z_proj.weight``, ``conditioner.proj.weight``) have the same names on both sides.
"""

from __future__ import annotations

from typing import Any

import torch

from pockettts.compat import KyutaiLayoutError
from pockettts.models.flow_lm import FlowLM
from pockettts.models.heads import ConsistencyHead
from pockettts.models.one_step_heads import DriftingHead

_TRAINING_RENAMES = {
    "condition_provider.conditioners.transcript_in_segment.embed.weight": "conditioner.embed.weight",
    "condition_provider.conditioners.speaker_wavs.output_proj.weight": "speaker_proj_weight",
    "fuser.padding_value": "bos_before_voice",
}
_DROPPED = (
    "condition_provider.conditioners.transcript_in_segment.learnt_padding",
    "condition_provider.conditioners.speaker_wavs.learnt_padding",
    "num_ema_updates",
)
# Ours only: training bookkeeping and the CALM additions, which Kyutai's code cannot run.
_OURS_ONLY = ("stats_updates",)


def pocket_to_flow_lm_state_dict(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Released FlowLM tensors (``flow_lm.`` prefix or not, either layout) -> our ``FlowLM`` names."""
    if any(name.startswith("flow_lm.") for name in tensors):
        tensors = {k.removeprefix("flow_lm."): v for k, v in tensors.items() if k.startswith("flow_lm.")}
    out: dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        if name in _DROPPED:
            continue
        name = _TRAINING_RENAMES.get(name, name).replace(
            ".self_attn.in_proj_weight", ".self_attn.in_proj.weight"
        )
        if name.startswith("flow_net."):
            name = "head." + name
        elif name.startswith("flow.w_s_t."):
            name = "head.w_s_t." + name.removeprefix("flow.w_s_t.")
        out[name] = tensor
    return out


# Our head kind -> the Pocket TTS ``flow.type`` that samples the same way.
_POCKET_FLOW_TYPES = {
    "lsd": "lsd",
    "flow_matching": "flow_matching",
    "drifting": "drifting",
    "pointwise": "pointwise",
    "consistency": "drifting",
}
# Pocket TTS ``flow.type``s our heads of the same kind name implement (sampling as the package does).
_HEAD_KINDS = ("lsd", "flow_matching", "drifting", "pointwise")


def flow_lm_to_pocket_state_dict(model: FlowLM, prefix: str = "flow_lm.") -> dict[str, torch.Tensor]:
    """Our FlowLM -> the package layout (what ``pocket_tts``'s ``FlowLMModel`` loads)."""
    if model.context_noise is not None and model.context_noise.level_embedding is not None:
        raise KyutaiLayoutError("a model conditioned on the context noise level has no Pocket TTS equivalent")
    if model.short_context is not None:
        raise KyutaiLayoutError("a model with a short-context transformer has no Pocket TTS equivalent")
    out: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        if name in _OURS_ONLY or name.startswith("head.") and not name.startswith("head.flow_net."):
            continue
        out[prefix + name.removeprefix("head.")] = tensor.detach().contiguous()
    if isinstance(model.head, ConsistencyHead):
        out = {k: v for k, v in out.items() if not k.startswith(f"{prefix}flow_net.")}
        one_step = DriftingHead.from_consistency(model.head).flow_net.state_dict()
        out.update({f"{prefix}flow_net.{k}": v.detach().contiguous() for k, v in one_step.items()})
    return out


def flow_lm_config_to_pocket(model: FlowLM, tokenizer_path: str, tokenizer_kind: str) -> dict[str, Any]:
    """Our FlowLM -> the ``flow_lm`` section of a Pocket TTS yaml (``flow_lm_config_from_pocket``'s
    inverse); ``tokenizer_kind`` is ``sentencepiece`` or ``tokenizers`` (a ``tokenizer.json``)."""
    config = model.config
    if config["max_period"] != int(config["max_period"]):
        raise KyutaiLayoutError(
            f"backbone max_period {config['max_period']} is not a whole number, as Pocket TTS requires"
        )
    kind = config["head"]["kind"]
    if kind not in _POCKET_FLOW_TYPES:
        raise KyutaiLayoutError(f"a {kind!r} generation head has no Pocket TTS flow type")
    net = model.head.flow_net
    d_model, dim_feedforward = config["d_model"], config["dim_feedforward"]
    transformer = {
        "d_model": d_model,
        "num_heads": config["num_heads"],
        "num_layers": config["num_layers"],
        "dim_feedforward": dim_feedforward,
        "hidden_scale": max(1, dim_feedforward // d_model),  # required, unused beside dim_feedforward
        "max_period": int(config["max_period"]),
    }
    lookup_table = {
        "dim": d_model,
        "n_bins": model.vocab_size,
        "tokenizer": tokenizer_kind,
        "tokenizer_path": tokenizer_path,
    }
    # The small-model options are written only when set, so a 100M model's section stays readable by
    # pocket-tts releases older than these options.
    transformer.update(_set_options(config, attn_dim="attn_dim", num_kv_heads="num_kv_heads"))
    lookup_table.update(_set_options(config, rank="text_rank"))
    return {
        "dtype": "float32",
        "insert_bos_before_voice": config["insert_bos_before_voice"],
        "flow": {"type": _POCKET_FLOW_TYPES[kind], "dim": net.model_channels, "depth": net.num_res_blocks},
        "transformer": transformer,
        "lookup_table": lookup_table,
        **_set_options(config, z_dim="z_dim"),
    }


def _set_options(config: dict[str, Any], **pocket_to_ours: str) -> dict[str, int]:
    """``{pocket_name: config[our_name]}`` for the options that are set (not ``None``) in our config."""
    return {pocket: config[ours] for pocket, ours in pocket_to_ours.items() if config.get(ours) is not None}


def flow_lm_config_from_pocket(
    config: dict[str, Any], latent_dim: int = 32, voice_dim: int | None = None
) -> dict:
    """The ``flow_lm`` section of a Pocket TTS yaml -> ``FlowLM`` keyword arguments."""
    transformer, lookup_table = config["transformer"], config["lookup_table"]
    kind = config["flow"].get("type", "lsd")
    if kind not in _HEAD_KINDS:
        raise ValueError(f"Pocket TTS flow type {kind!r} is not supported")
    d_model = transformer["d_model"]
    if lookup_table["dim"] != d_model:
        # the package concatenates text embeddings (lookup_table.dim wide) with d_model-wide inputs
        raise ValueError(f"lookup_table.dim {lookup_table['dim']} differs from transformer.d_model {d_model}")
    return dict(
        head={"kind": kind, "dim": config["flow"]["dim"], "depth": config["flow"]["depth"]},
        latent_dim=latent_dim,
        voice_dim=voice_dim,
        d_model=d_model,
        num_heads=transformer["num_heads"],
        num_layers=transformer["num_layers"],
        dim_feedforward=transformer.get("dim_feedforward") or int(d_model * transformer["hidden_scale"]),
        max_period=float(transformer["max_period"]),
        vocab_size=lookup_table["n_bins"],
        insert_bos_before_voice=config.get("insert_bos_before_voice", True),
        attn_dim=transformer.get("attn_dim"),
        num_kv_heads=transformer.get("num_kv_heads"),
        z_dim=config.get("z_dim"),
        text_rank=lookup_table.get("rank"),
    )
