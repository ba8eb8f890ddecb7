"""Adversarial losses: hinge and LSGAN against hand computations, and feature matching."""

from __future__ import annotations

import pytest
import torch

from pockettts.losses.adversarial import (
    discriminator_loss,
    feature_matching_loss,
    generator_adversarial_loss,
)


def outputs(*logits, features=None):
    """Discriminator-style output list from logit tensors (features default to the logits)."""
    return [(lg, features if features is not None else [lg]) for lg in logits]


def test_hinge_discriminator_loss_matches_hand_computation():
    real = outputs(torch.tensor([2.0, 0.5]), torch.tensor([0.0, 3.0]))
    fake = outputs(torch.tensor([-0.5, 1.0]), torch.tensor([-2.0, -1.0]))
    # sub-disc 1: real mean(relu(1-[2, .5])) = .25, fake mean(relu(1+[-.5, 1])) = 1.25 -> 1.5
    # sub-disc 2: real mean(relu(1-[0, 3])) = .5,   fake mean(relu(1+[-2, -1])) = 0   -> .5
    assert discriminator_loss(real, fake, "hinge").item() == pytest.approx(1.0)
    # generator: mean(relu(1 - fake)): sub 1 -> mean(1.5, 0) = .75; sub 2 -> mean(3, 2) = 2.5
    assert generator_adversarial_loss(fake, "hinge").item() == pytest.approx(1.625)


def test_lsgan_losses_match_hand_computation():
    real = outputs(torch.tensor([1.0, 0.0]))
    fake = outputs(torch.tensor([0.5, -1.0]))
    # D: mean((1-[1, 0])^2) = .5 ; mean([.5, -1]^2) = .625
    assert discriminator_loss(real, fake, "lsgan").item() == pytest.approx(1.125)
    # G: mean((1-[.5, -1])^2) = mean(.25, 4) = 2.125
    assert generator_adversarial_loss(fake, "lsgan").item() == pytest.approx(2.125)


@pytest.mark.parametrize("kind", ["hinge", "lsgan"])
def test_discriminator_loss_prefers_correct_verdicts(kind):
    confident = discriminator_loss(outputs(torch.full((4,), 1.0)), outputs(torch.full((4,), -1.0)), kind)
    swapped = discriminator_loss(outputs(torch.full((4,), -1.0)), outputs(torch.full((4,), 1.0)), kind)
    assert confident.item() < swapped.item()
    fooled = generator_adversarial_loss(outputs(torch.full((4,), 1.0)), kind)
    caught = generator_adversarial_loss(outputs(torch.full((4,), -1.0)), kind)
    assert fooled.item() < caught.item()


def test_unknown_kind_is_named_in_the_error():
    real = outputs(torch.zeros(2))
    with pytest.raises(ValueError, match="wgan"):
        discriminator_loss(real, real, kind="wgan")
    with pytest.raises(ValueError, match="wgan"):
        generator_adversarial_loss(real, kind="wgan")


def test_feature_matching_zero_for_identical_and_normalised_per_layer():
    feats = [torch.randn(2, 3, 5), 100.0 * torch.randn(2, 4)]
    same = feature_matching_loss(
        outputs(torch.zeros(1), features=feats), outputs(torch.zeros(1), features=feats)
    )
    assert same.item() == 0.0
    # Off by 10% of each layer's scale: every layer contributes the same despite the 100x scale gap.
    fake_feats = [1.1 * f for f in feats]
    loss = feature_matching_loss(
        outputs(torch.zeros(1), features=feats), outputs(torch.zeros(1), features=fake_feats)
    )
    assert loss.item() == pytest.approx(0.1, rel=1e-4)


def test_feature_matching_gradient_only_reaches_fake():
    real = torch.randn(3, 4, requires_grad=True)
    fake = torch.randn(3, 4, requires_grad=True)
    loss = feature_matching_loss(
        outputs(torch.zeros(1), features=[real]), outputs(torch.zeros(1), features=[fake])
    )
    assert loss.item() > 0
    loss.backward()
    assert real.grad is None and fake.grad is not None
