"""GAN losses over the ``(logits, feature_maps)`` lists returned by ``pockettts.modules.discriminators``.

Every loss is averaged over sub-discriminators (EnCodec style), so loss weights do not depend on how
many sub-discriminators a configuration has. Two objectives are supported:

- ``"hinge"``: D minimises ``relu(1 - D(x)) + relu(1 + D(G(z)))``; G minimises ``relu(1 - D(G(z)))``
  (the EnCodec paper's form; it stops pushing once a logit passes the margin).
- ``"lsgan"``: D minimises ``(1 - D(x))^2 + D(G(z))^2``; G minimises ``(1 - D(G(z)))^2`` (HiFi-GAN, DAC).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

DiscriminatorOutput = Sequence[tuple[Tensor, Sequence[Tensor]]]
ADVERSARIAL_KINDS = ("hinge", "lsgan")


def _check_kind(kind: str) -> None:
    if kind not in ADVERSARIAL_KINDS:
        raise ValueError(f"unknown adversarial loss kind {kind!r}; expected one of {ADVERSARIAL_KINDS}")


def _check_paired(real_outputs: DiscriminatorOutput, fake_outputs: DiscriminatorOutput) -> None:
    if len(real_outputs) != len(fake_outputs):
        raise ValueError(
            "real and fake discriminator outputs differ in length "
            f"({len(real_outputs)} vs {len(fake_outputs)})"
        )
    if len(real_outputs) == 0:
        raise ValueError("discriminator outputs are empty")


def _real_term(logits: Tensor, kind: str) -> Tensor:
    logits = logits.float()
    if kind == "hinge":
        return torch.relu(1.0 - logits).mean()
    return (1.0 - logits).pow(2).mean()


def _fake_term(logits: Tensor, kind: str) -> Tensor:
    logits = logits.float()
    if kind == "hinge":
        return torch.relu(1.0 + logits).mean()
    return logits.pow(2).mean()


def discriminator_loss(
    real_outputs: DiscriminatorOutput, fake_outputs: DiscriminatorOutput, kind: str = "hinge"
) -> Tensor:
    """Discriminator loss: real logits pushed up, fake logits pushed down; scalar float32.

    Pass fake outputs computed on ``fake_audio.detach()`` so the generator gets no gradient here.
    """
    _check_kind(kind)
    _check_paired(real_outputs, fake_outputs)
    total = sum(
        _real_term(real_logits, kind) + _fake_term(fake_logits, kind)
        for (real_logits, _), (fake_logits, _) in zip(real_outputs, fake_outputs)
    )
    return total / len(real_outputs)


def generator_adversarial_loss(fake_outputs: DiscriminatorOutput, kind: str = "hinge") -> Tensor:
    """Generator loss: make the discriminators call generated audio real; scalar float32."""
    _check_kind(kind)
    if len(fake_outputs) == 0:
        raise ValueError("discriminator outputs are empty")
    # For both kinds the generator's target is the discriminator's "real" target.
    total = sum(_real_term(fake_logits, kind) for fake_logits, _ in fake_outputs)
    return total / len(fake_outputs)


def feature_matching_loss(
    real_outputs: DiscriminatorOutput, fake_outputs: DiscriminatorOutput, eps: float = 1e-8
) -> Tensor:
    """L1 between fake and (detached) real discriminator features; scalar float32.

    Each layer's L1 is divided by the mean ``|real|`` of that layer (EnCodec), so layers with large
    activations do not dominate; the result is averaged over layers, then over sub-discriminators.
    """
    _check_paired(real_outputs, fake_outputs)
    per_discriminator = []
    for index, ((_, real_features), (_, fake_features)) in enumerate(zip(real_outputs, fake_outputs)):
        if len(real_features) != len(fake_features) or len(real_features) == 0:
            raise ValueError(
                f"sub-discriminator {index}: real and fake feature lists differ or are empty "
                f"({len(real_features)} vs {len(fake_features)})"
            )
        layer_losses = []
        for real, fake in zip(real_features, fake_features):
            real = real.detach().float()
            scale = real.abs().mean().clamp_min(eps)
            layer_losses.append((fake.float() - real).abs().mean() / scale)
        per_discriminator.append(torch.stack(layer_losses).mean())
    return torch.stack(per_discriminator).mean()
