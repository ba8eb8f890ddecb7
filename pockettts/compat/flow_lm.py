"""Convert between our ``FlowLM`` and the released Pocket TTS FlowLM layout.

Read: the ``flow_lm.*`` tensors of a Pocket TTS model file (package layout), or Kyutai's training
layout (``condition_provider.conditioners...``, ``fuser.padding_value``, ``in_proj_weight``,
``flow.w_s_t.*``). Written: the package layout. Our head lives under ``head.`` (``head.flow_net``
is Kyutai's ``flow_net``; ``head.w_s_t`` their training-only ``flow.w_s_t``).
"""

from __future__ import annotations

from typing import Any

import torch

from pockettts.models.flow_lm import FlowLM

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


def flow_lm_to_pocket_state_dict(model: FlowLM, prefix: str = "flow_lm.") -> dict[str, torch.Tensor]:
    """Our FlowLM -> the package layout (what ``pocket_tts``'s ``FlowLMModel`` loads)."""
    if model.context_noise is not None and model.context_noise.level_embedding is not None:
        raise ValueError("a model conditioned on the context noise level has no Pocket TTS equivalent")
    if model.short_context is not None:
        raise ValueError("a model with a short-context transformer has no Pocket TTS equivalent")
    out: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        if name in _OURS_ONLY or name.startswith("head.") and not name.startswith("head.flow_net."):
            continue
        out[prefix + name.removeprefix("head.")] = tensor.detach().contiguous()
    return out


def flow_lm_config_from_pocket(
    config: dict[str, Any], latent_dim: int = 32, voice_dim: int | None = None
) -> dict:
    """The ``flow_lm`` section of a Pocket TTS yaml -> ``FlowLM`` keyword arguments."""
    transformer = config["transformer"]
    if transformer.get("attn_dim") or transformer.get("num_kv_heads") or config.get("z_dim"):
        raise ValueError("grouped-query / projected-attention Pocket TTS variants are not supported")
    if config["lookup_table"].get("rank"):
        raise ValueError("low-rank text embeddings (lookup_table.rank) are not supported")
    kind = {"lsd": "lsd", "flow_matching": "flow_matching"}.get(config.get("flow", {}).get("type", "lsd"))
    if kind is None:
        raise ValueError(f"Pocket TTS flow type {config['flow'].get('type')!r} is not supported")
    d_model = transformer["d_model"]
    return dict(
        head={"kind": kind, "dim": config["flow"]["dim"], "depth": config["flow"]["depth"]},
        latent_dim=latent_dim,
        voice_dim=voice_dim,
        d_model=d_model,
        num_heads=transformer["num_heads"],
        num_layers=transformer["num_layers"],
        dim_feedforward=transformer.get("dim_feedforward") or int(d_model * transformer["hidden_scale"]),
        max_period=float(transformer["max_period"]),
        vocab_size=config["lookup_table"]["n_bins"],
        insert_bos_before_voice=config.get("insert_bos_before_voice", True),
    )
