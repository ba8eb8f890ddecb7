"""Text-attention measures: the guided-attention loss and the alignment scores (text mass and
progress through the text)."""

from __future__ import annotations

import torch

from pockettts.models.text_alignment import alignment_scores, guided_attention_loss


def test_guided_attention_loss_is_zero_on_the_diagonal_and_grows_off_it():
    queries, tokens = 30, 10
    diagonal = torch.zeros(queries, tokens)
    diagonal[torch.arange(queries), torch.arange(queries) * tokens // queries] = 0.5  # half on voice/audio
    uniform = torch.full((queries, tokens), 0.05)
    losses = [guided_attention_loss(a, sigma=0.2).item() for a in (diagonal, uniform, diagonal.flip(0))]
    assert losses[0] < 0.05 < losses[1] < losses[2]
    scores = torch.randn(queries, tokens, requires_grad=True)
    guided_attention_loss(scores.softmax(-1)).backward()
    assert scores.grad.abs().sum() > 0


def test_alignment_scores_tell_a_march_through_the_text_from_none():
    frames, tokens = 20, 5
    march = torch.zeros(frames, tokens)
    march[torch.arange(frames), torch.arange(frames) * tokens // frames] = 0.8  # 0.2 elsewhere
    backwards, still = march.flip(0), torch.full((frames, tokens), 0.1)
    mass, progress = alignment_scores(torch.stack([march, backwards, still]))
    torch.testing.assert_close(mass, torch.tensor([0.8, 0.8, 0.5]))
    assert progress[0] > 0.95 and progress[1] < -0.95 and progress[2] == 0
