"""Where in its text a FlowLM is: the attention of its audio frames onto its text tokens.

A backbone that reads has heads whose attention moves through the text as the speech goes on (the
diagonal of attention-based TTS). Two scores per layer and head, over an item's audio frames:

- ``text_mass``: the share of a frame's attention that lands on text tokens;
- ``progress``: the correlation between the frame index and the centre of the frame's attention
  over the text (token position / (tokens - 1), attention renormalised over the text): +1 is a
  steady march from the first token to the last, 0 no relation (a text-blind or memorising model).

Training logs the best head's mean ``progress`` as ``val/text_progress``; ``pockettts.eval.alignment``
reports every head for any export and manifest. ``guided_attention_loss`` is an optional training
aid beyond Pocket TTS (Tachibana et al., 2018, for a prefix-text backbone): it pulls chosen heads'
attention over the text toward the diagonal, for small corpora where the alignment forms slowly.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

from pockettts.models.flow_lm import FlowLM

# Items shorter than this have under two audio queries: no progress to measure.
MIN_FRAMES = 3


@contextmanager
def attention_inputs(model: FlowLM, layers: Sequence[int] | None = None) -> Iterator[dict[int, torch.Tensor]]:
    """Collects, during the ``model`` calls in the block, the input ``[B, T, D]`` of the
    self-attention of each of ``layers`` (default: all), by layer index (the last call's)."""
    inputs: dict[int, torch.Tensor] = {}
    chosen = range(len(model.transformer.layers)) if layers is None else layers
    hooks = [
        model.transformer.layers[i].self_attn.register_forward_pre_hook(
            lambda _, args, i=i: inputs.__setitem__(i, args[0])
        )
        for i in chosen
    ]
    try:
        yield inputs
    finally:
        for hook in hooks:
            hook.remove()


def rows_onto_text(
    model: FlowLM,
    inputs: dict[int, torch.Tensor],
    voice_lengths: torch.Tensor,
    text_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
) -> list[torch.Tensor]:
    """Per row, the attention of its audio positions onto its text tokens in each captured layer:
    ``[layers, H, F_i - 1, L_i]`` for ``F_i`` target frames and ``L_i`` tokens (the queries that read
    frames 1..F_i-1 as input: after the BOS latent, before the EOS position). The lengths are those
    the forward saw (0 for a dropped voice or text). Differentiable."""
    before_voice = 0 if model.bos_before_voice is None else 1
    text_starts = before_voice + voice_lengths
    audio_starts = text_starts + text_lengths
    rows: list[list[torch.Tensor]] = [[] for _ in range(len(target_lengths))]
    for index in sorted(inputs):
        weights = model.transformer.layers[index].self_attn.attention_weights(inputs[index])  # [B, H, T, T]
        for i, row in enumerate(rows):
            t, a, f = int(text_starts[i]), int(audio_starts[i]), int(target_lengths[i])
            row.append(weights[i, :, a + 1 : a + f, t:a].float())  # right padding is never seen
    return [torch.stack(row) for row in rows]


@torch.no_grad()
def text_attention(
    model: FlowLM,
    voice: torch.Tensor,
    voice_lengths: torch.Tensor,
    text: torch.Tensor,
    text_lengths: torch.Tensor,
    target: torch.Tensor,
    target_lengths: torch.Tensor,
) -> list[torch.Tensor]:
    """``rows_onto_text`` of every layer for a padded teacher-forcing batch (``FlowLM.forward``'s
    inputs, nothing dropped)."""
    with attention_inputs(model) as inputs:
        model(voice, voice_lengths, text, text_lengths, target, target_lengths)
    return rows_onto_text(model, inputs, voice_lengths, text_lengths, target_lengths)


def alignment_scores(attention: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[..., Q, L]`` attention of ``Q`` successive queries onto ``L`` tokens -> ``text_mass`` and
    ``progress``, each ``[...]`` (``progress`` is 0 where the centre never moves)."""
    mass = attention.sum(-1)
    tokens = attention.shape[-1]
    positions = torch.arange(tokens, dtype=attention.dtype, device=attention.device) / max(tokens - 1, 1)
    centre = (attention / mass[..., None].clamp_min(1e-12)) @ positions  # [..., Q]
    steps = torch.arange(attention.shape[-2], dtype=attention.dtype, device=attention.device)
    centre = centre - centre.mean(-1, keepdim=True)
    steps = steps - steps.mean()
    scale = centre.norm(dim=-1) * steps.norm()
    progress = torch.where(scale > 1e-9, (centre * steps).sum(-1) / scale.clamp_min(1e-9), 0.0)
    return mass.mean(-1), progress


def guided_attention_loss(attention: torch.Tensor, sigma: float = 0.2) -> torch.Tensor:
    """``[..., Q, L]`` attention of ``Q`` successive queries onto ``L`` text tokens -> the mean over
    queries (and leading dims) of the attention, renormalised over the text, that lies off the
    diagonal: weight ``1 - exp(-(q / (Q - 1) - l / (L - 1))² / (2 σ²))`` per (query, token)."""
    queries, tokens = attention.shape[-2:]
    query = torch.arange(queries, dtype=attention.dtype, device=attention.device)[:, None] / max(
        queries - 1, 1
    )
    token = torch.arange(tokens, dtype=attention.dtype, device=attention.device)[None, :] / max(tokens - 1, 1)
    off_diagonal = 1.0 - torch.exp(-((query - token) ** 2) / (2 * sigma**2))
    over_text = attention / attention.sum(-1, keepdim=True).clamp_min(1e-12)
    return (over_text * off_diagonal).sum(-1).mean()
