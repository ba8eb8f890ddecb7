"""The Gaussian KL term: its closed form, zero at the prior, and the frame mask."""

from __future__ import annotations

import pytest
import torch

from pockettts.losses.kl import gaussian_kl


def test_gaussian_kl_closed_form_and_zero_at_prior():
    torch.manual_seed(0)
    mean, logvar = torch.randn(2, 4, 6), torch.randn(2, 4, 6)
    prior = torch.distributions.Normal(0.0, 1.0)
    posterior = torch.distributions.Normal(mean, (0.5 * logvar).exp())
    expected = torch.distributions.kl_divergence(posterior, prior).sum(dim=1).mean()
    torch.testing.assert_close(gaussian_kl(mean, logvar), expected)
    assert gaussian_kl(torch.zeros(2, 4, 6), torch.zeros(2, 4, 6)).item() == 0.0


def test_gaussian_kl_mask_excludes_frames():
    mean = torch.zeros(2, 3, 4)
    logvar = torch.zeros(2, 3, 4)
    mean[0, :, :2] = 1.0  # valid frames: KL = 0.5 * 3 = 1.5 each
    mean[1, :, 3] = 1e3  # a padded frame with a huge value
    logvar[1, :, 3] = 1e3  # would overflow exp() if it were not excluded
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]], dtype=torch.bool)
    mean.requires_grad_(True)
    logvar.requires_grad_(True)
    kl = gaussian_kl(mean, logvar, mask)
    # (1.5 + 1.5 + 0 + 0 + 0) / 5 valid frames
    assert kl.item() == pytest.approx(3.0 / 5.0)
    kl.backward()
    assert torch.isfinite(logvar.grad).all() and logvar.grad[1, :, 3].abs().sum() == 0
