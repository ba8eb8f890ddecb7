"""Warm start of a small-family FlowLM (grouped-query attention, a ``z`` bottleneck, a one-step head)
from a trained FlowLM of the same width without them, so that distillation into it starts from a model
that already speaks instead of from noise.

* Every tensor whose name and shape match is copied.
* Grouped-query attention: each group's key and value heads are the mean of the source's heads in that
  group (Ainslie et al. 2023, "GQA: Training Generalized Multi-Query Transformer Models from Multi-Head
  Checkpoints", arXiv 2305.13245, §2.2: mean pooling converted best). Queries are copied.
* The ``z`` bottleneck: what the head reads of the backbone output ``h`` is ``W h`` (``W`` the head's
  ``cond_embed`` weight ``[dim, d]``, times the source's own ``z_proj`` if it has one). Its truncated SVD
  ``W ≈ U_r S_r V_rᵀ`` (the best rank-``z_dim`` approximation, Eckart-Young) splits it into
  ``z_proj = S_r^½ V_rᵀ`` ``[z_dim, d]`` and ``cond_embed = U_r S_r^½`` ``[dim, z_dim]``: exact when
  ``rank(W) ≤ z_dim``. The EOS head ``w`` (``[1, d]``) must then read ``z``: ``w' = w z_projᵀ⁺``, the
  least-squares solution of ``w' z_proj ≈ w`` (exact when ``w`` lies in ``z_proj``'s row space).
* The head: the source's own, or a given one (e.g. the teacher's); an LSD head becomes a pointwise one by
  ``PointwiseHead.from_lsd`` (its exact one-step sampler), then its ``cond_embed`` is factorised as above.
"""

from __future__ import annotations

import logging

import torch

from pockettts.models.flow_lm import FlowLM
from pockettts.models.head_base import GenerationHead
from pockettts.models.heads import LSDHead
from pockettts.models.one_step_heads import PointwiseHead

log = logging.getLogger(__name__)

COND_EMBED = "head.flow_net.cond_embed.weight"


def grouped_key_values(
    in_proj: torch.Tensor, attn_dim: int, head_dim: int, num_kv_heads: int
) -> torch.Tensor:
    """A packed multi-head ``in_proj`` weight ``[attn_dim + 2 * attn_dim, d]`` (queries, then keys and
    values, ``attn_dim // head_dim`` heads each) -> the grouped-query one ``[attn_dim + 2 * kv_dim, d]``:
    key and value heads averaged over each group of consecutive heads (query head ``i`` reads group
    ``i // group``)."""
    num_heads = attn_dim // head_dim
    if in_proj.shape[0] != 3 * attn_dim:
        raise ValueError(
            f"in_proj {tuple(in_proj.shape)} is not multi-head with {num_heads} heads of {head_dim}"
        )
    if num_heads % num_kv_heads:
        raise ValueError(f"{num_heads} heads do not split into {num_kv_heads} key/value groups")
    queries, keys_values = in_proj[:attn_dim], in_proj[attn_dim:]
    grouped = keys_values.reshape(2, num_kv_heads, num_heads // num_kv_heads, head_dim, -1).mean(dim=2)
    return torch.cat([queries, grouped.reshape(2 * num_kv_heads * head_dim, -1)])


def factorised_bottleneck(
    cond_weight: torch.Tensor, eos_weight: torch.Tensor, z_dim: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``cond_weight`` ``[dim, d]`` and ``eos_weight`` ``[1, d]`` (both reading ``h``) -> ``z_proj``
    ``[z_dim, d]``, ``cond_embed`` ``[dim, z_dim]`` and ``out_eos`` ``[1, z_dim]`` weights (all reading
    ``z = z_proj h``) by the truncated SVD (module docstring)."""
    if z_dim > min(cond_weight.shape):
        raise ValueError(
            f"z_dim {z_dim} exceeds the rank bound {min(cond_weight.shape)} of {tuple(cond_weight.shape)}"
        )
    u, s, vh = torch.linalg.svd(cond_weight.double(), full_matrices=False)
    root = s[:z_dim].sqrt()
    z_proj = root[:, None] * vh[:z_dim]
    cond_embed = u[:, :z_dim] * root[None, :]
    eos = eos_weight.double() @ torch.linalg.pinv(z_proj)
    kept = (s[:z_dim].square().sum() / s.square().sum()).item()
    log.info("z bottleneck %d of %d: the head's input keeps %.4f of its energy", z_dim, len(s), kept)
    return tuple(w.to(cond_weight.dtype) for w in (z_proj, cond_embed, eos))


def one_step_head(head: GenerationHead, target: GenerationHead) -> GenerationHead:
    """``head`` in ``target``'s kind: itself, or an LSD head as a pointwise one (its one-step sampler)."""
    if type(head) is type(target):
        return head
    if isinstance(head, LSDHead) and isinstance(target, PointwiseHead):
        return PointwiseHead.from_lsd(head)
    raise ValueError(f"cannot start a {type(target).__name__} from a {type(head).__name__}")


def warm_start(model: FlowLM, source: FlowLM, head: GenerationHead | None = None) -> None:
    """Load ``source``'s weights into ``model`` (module docstring); ``head`` (default ``source.head``)
    is the head to start from, read at ``source``'s ``z``. Raises on any tensor that neither matches nor
    converts."""
    own = model.state_dict()
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("head.")}
    converted = one_step_head(head if head is not None else source.head, model.head)
    state.update({f"head.{k}": v for k, v in converted.state_dict().items()})
    # What the head and the EOS head read of out_norm's output, in the source.
    reads = (
        source.z_proj.weight
        if source.z_proj is not None
        else torch.eye(source.d_model, dtype=state[COND_EMBED].dtype)
    )
    cond, eos = state.pop(COND_EMBED) @ reads, state.pop("out_eos.weight") @ reads
    state.pop("z_proj.weight", None)
    if cond.shape[1] != model.d_model:
        raise ValueError(f"the source's d_model {cond.shape[1]} differs from the model's {model.d_model}")
    if model.z_proj is None:  # no bottleneck: read h as the source does
        state[COND_EMBED], state["out_eos.weight"] = cond, eos
    else:
        state["z_proj.weight"], state[COND_EMBED], state["out_eos.weight"] = factorised_bottleneck(
            cond, eos, model.z_dim
        )
    for index, layer in enumerate(model.transformer.layers):
        attention, name = layer.self_attn, f"transformer.layers.{index}.self_attn.in_proj.weight"
        if name in state and state[name].shape != own[name].shape:
            state[name] = grouped_key_values(
                state[name], attention.attn_dim, attention.head_dim, attention.num_kv_heads
            )
    misfit = sorted(set(own) ^ set(state)) + [k for k in own if k in state and own[k].shape != state[k].shape]
    if misfit:
        raise ValueError(f"warm start: the source does not fit the model at {misfit[:4]}")
    model.load_state_dict(state)
