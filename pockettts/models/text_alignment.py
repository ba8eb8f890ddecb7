"""Where in its text a FlowLM is: the attention of its audio frames onto its text tokens.

A backbone that reads has heads whose attention moves through the text as the speech goes on (the
diagonal of attention-based TTS). Two scores per layer and head, over an item's audio frames:

- ``text_mass``: the share of a frame's attention that lands on text tokens;
- ``progress``: the correlation between the frame index and the centre of the frame's attention
  over the text (token position / (tokens - 1), attention renormalised over the text): +1 is a
  steady march from the first token to the last, 0 no relation (a text-blind or memorising model).

Training logs the best head's mean ``progress`` as ``val/text_progress``; ``pockettts.eval.alignment``
reports every head for any export and manifest.
"""

from __future__ import annotations

import torch

from pockettts.models.flow_lm import FlowLM

# Items shorter than this have under two audio queries: no progress to measure.
MIN_FRAMES = 3


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
    """Per row of a padded teacher-forcing batch (``FlowLM.forward``'s inputs), the attention of its
    audio positions onto its text tokens, every layer and head: ``[layers, H, F_i - 1, L_i]`` for
    ``F_i`` target frames and ``L_i`` tokens (the queries that read frames 1..F_i-1 as input: after
    the BOS latent, before the EOS position)."""
    inputs: list[torch.Tensor] = []
    layers = model.transformer.layers
    hooks = [
        layer.self_attn.register_forward_pre_hook(lambda _, args: inputs.append(args[0])) for layer in layers
    ]
    try:
        model(voice, voice_lengths, text, text_lengths, target, target_lengths)
    finally:
        for hook in hooks:
            hook.remove()
    before_voice = 0 if model.bos_before_voice is None else 1
    text_starts = before_voice + voice_lengths
    audio_starts = text_starts + text_lengths
    rows: list[list[torch.Tensor]] = [[] for _ in range(target.shape[0])]
    for layer, x in zip(layers, inputs):
        weights = layer.self_attn.attention_weights(x)  # [B, H, T, T]; right padding is never seen
        for i, row in enumerate(rows):
            t, a, f = int(text_starts[i]), int(audio_starts[i]), int(target_lengths[i])
            row.append(weights[i, :, a + 1 : a + f, t:a].float())
    return [torch.stack(row) for row in rows]


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
