"""The heads without a time input (drifting, pointwise): sampling against pocket-tts's decoders, the
drifting field of Deng et al.'s Algorithm 2 and its loss, the energy score, the learned temperature, the
exact conversions from an LSD and a consistency head, and input checks. Their learning tests (a
conditional distribution, a ring of modes) are in ``test_heads``."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch

from pockettts.models.heads import ConsistencyHead, FlowMatchingHead, LSDHead, build_head
from pockettts.models.one_step_heads import (
    DriftingHead,
    PointwiseHead,
    drifting_field,
    group_rows,
    log_laplace_kde,
    ungroup_rows,
)
from tests.support import randomise

SMALL = dict(latent_dim=2, cond_dim=16, dim=32, depth=2)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny matrices: one thread is fastest


class FixedSamples(torch.nn.Module):
    """A "network" whose output is a free tensor: the loss's gradient on it is the samples' drift."""

    def __init__(self, samples: torch.Tensor):
        super().__init__()
        self.samples = torch.nn.Parameter(samples.clone())

    def forward(self, z: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.samples


# ---------------------------------------------------------------------------------------------- sampling


@pytest.mark.parametrize(
    "kind, decoder", [("drifting", "drifting_decode"), ("pointwise", "pointwise_decode")]
)
def test_sampling_matches_pocket_tts_decoders(kind, decoder):
    flow_lm = pytest.importorskip("pocket_tts.models.flow_lm", reason="parity needs pocket-tts")
    mlp = pytest.importorskip("pocket_tts.modules.mlp")
    theirs = mlp.SimpleMLPAdaLN(8, 32, 8, 16, 2, num_time_conds=0)
    randomise(theirs, seed=0)
    head = build_head(kind, latent_dim=8, cond_dim=16, dim=32, depth=2, batch_multiplier=2)
    assert set(head.state_dict()) == {f"flow_net.{k}" for k in theirs.state_dict()}  # no time_embed
    head.flow_net.load_state_dict(theirs.state_dict(), strict=True)

    generator = torch.Generator().manual_seed(1)
    z, noise = torch.randn(5, 16, generator=generator), torch.randn(5, 8, generator=generator)
    expected = getattr(flow_lm, decoder)(partial(theirs, z), noise)
    assert expected.abs().mean() > 0.1  # the comparison is not between zeros
    torch.testing.assert_close(head.sample(z, noise), expected, atol=1e-5, rtol=1e-5)
    # one network evaluation whatever the steps, as the package's decoders ignore them
    torch.testing.assert_close(head.sample(z, noise, steps=4), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "kind, options",
    [("drifting", {}), ("drifting", {"temperatures": (0.05,), "learn_temperature": True}), ("pointwise", {})],
)
def test_losses_are_finite_with_and_without_valid_rows(kind, options):
    torch.manual_seed(0)
    head = build_head(kind, **SMALL, batch_multiplier=3, **options)
    randomise(head.flow_net, seed=9)
    z, x1 = torch.randn(2, 5, 16), torch.randn(2, 5, 2)
    loss, terms = head.loss(z, x1, torch.rand(2, 5) < 0.6)
    assert torch.isfinite(loss) and all(torch.isfinite(v) for v in terms.values())
    loss.backward()
    empty, empty_terms = head.loss(z, x1, torch.zeros(2, 5, dtype=torch.bool))
    assert empty.item() == 0.0 and all(torch.isfinite(v) for v in empty_terms.values())


def test_group_rows_gathers_the_copies_of_a_row():
    rows = torch.arange(12.0).view(6, 2)  # 3 copies of 2 rows, laid out as GenerationHead.loss repeats
    groups = group_rows(rows, 3)
    assert groups.shape == (2, 3, 2)
    torch.testing.assert_close(groups[1], rows[[1, 3, 5]])
    torch.testing.assert_close(ungroup_rows(groups), rows)


# ------------------------------------------------------------------------------------------- drifting


def algorithm_2(
    x: torch.Tensor, y_pos: torch.Tensor, y_neg: torch.Tensor, temperature: float
) -> torch.Tensor:
    """The paper's pseudo-code for one group, with its ``eye·1e6`` self-exclusion (``y_neg`` is ``x``)."""
    dist_neg = torch.cdist(x, y_neg) + torch.eye(x.shape[0], dtype=x.dtype) * 1e6
    logit = torch.cat([-torch.cdist(x, y_pos), -dist_neg], dim=1) / temperature
    a = torch.sqrt(logit.softmax(dim=-1) * logit.softmax(dim=-2))
    a_pos, a_neg = a.split([y_pos.shape[0], y_neg.shape[0]], dim=1)
    return (a_pos * a_neg.sum(1, keepdim=True)) @ y_pos - (a_neg * a_pos.sum(1, keepdim=True)) @ y_neg


def test_drifting_field_is_algorithm_2_in_independent_groups():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 4, generator=generator, dtype=torch.float64)
    positives = torch.randn(3, 2, 4, generator=generator, dtype=torch.float64)
    field = drifting_field(x, positives, x, 0.7, exclude_self=True)
    expected = torch.stack([algorithm_2(x[g], positives[g], x[g], 0.7) for g in range(3)])
    assert expected.abs().max() > 0.01
    torch.testing.assert_close(field, expected, atol=1e-12, rtol=1e-9)


def test_drifting_field_is_antisymmetric_and_vanishes_when_the_distributions_match():
    generator = torch.Generator().manual_seed(1)
    x, a, b = (torch.randn(2, 6, 3, generator=generator, dtype=torch.float64) for _ in range(3))
    field = drifting_field(x, a, b, 0.5)
    assert field.abs().max() > 0.01
    torch.testing.assert_close(drifting_field(x, b, a, 0.5), -field)  # Prop. 3.1: V_{p,q} = −V_{q,p}
    assert drifting_field(x, a, a.clone(), 0.5).abs().max() < 1e-12  # p = q: no drift


def test_drifting_loss_moves_each_sample_along_the_normalised_drift():
    """The gradient of the per-row loss on a sample ``x`` is ``−2·Ṽ/(S·D)``: ``Ṽ`` the sum over
    temperatures of each field divided by its batch RMS per channel, ``S = d̄/√D``."""
    k, n, dim = 4, 3, 2
    head = DriftingHead(**SMALL, batch_multiplier=k, temperatures=(0.1, 0.5))
    generator = torch.Generator().manual_seed(2)
    samples = torch.randn(k * n, dim, generator=generator)
    x1 = torch.randn(n, dim, generator=generator).repeat(k, 1)
    head.flow_net = FixedSamples(samples)
    per_row, terms = head.objective(torch.zeros(k * n, 16), x1, torch.zeros(k * n, dim))
    per_row.sum().backward()

    grouped, positives = group_rows(samples, k), group_rows(x1, k)[:, :1]
    pairs = torch.cdist(grouped, grouped).sum() / (n * k * (k - 1))
    scale = (torch.cdist(grouped, positives).mean() + pairs) / 2
    drift = torch.zeros_like(grouped)
    for tau in (0.1, 0.5):
        field = drifting_field(grouped, positives, grouped, tau * scale, exclude_self=True)
        drift += field / field.square().sum(-1).mean().div(dim).sqrt()
    norm = scale / math.sqrt(dim)
    torch.testing.assert_close(head.flow_net.samples.grad, -2 * ungroup_rows(drift) / (norm * dim))
    torch.testing.assert_close(per_row, ungroup_rows(drift).square().mean(-1))  # ‖Ṽ‖²/D: not a quality
    torch.testing.assert_close(terms["distance_scale"], scale)


def test_kernel_density_is_normalised():
    """``log_laplace_kde`` is a density: it integrates to 1 over the plane (a fine grid)."""
    samples = torch.tensor([[[0.3, -0.2], [-0.5, 0.4], [0.1, 0.9]]], dtype=torch.float64)
    axis = torch.linspace(-8, 8, 801, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis)
    density = log_laplace_kde(grid, samples.expand(grid.shape[0], -1, -1), torch.tensor(0.4)).exp()
    assert abs(float(density.sum() * (axis[1] - axis[0]) ** 2) - 1.0) < 1e-3


def test_learned_temperature_is_fitted_by_the_data_likelihood_outside_flow_net():
    head = DriftingHead(**SMALL, batch_multiplier=4, temperatures=(0.05,), learn_temperature=True)
    assert "log_temperature" in head.state_dict()
    assert not any("temperature" in name for name in head.flow_net.state_dict())
    # tight samples far from the data: a wider kernel explains the data better, so τ must grow
    z, x1 = torch.zeros(8, 16), torch.full((8, 2), 3.0)
    head.flow_net = FixedSamples(0.05 * torch.randn(8, 2, generator=torch.Generator().manual_seed(3)))
    per_row, terms = head.objective(z, x1, torch.zeros(8, 2))
    per_row.mean().backward()
    assert head.log_temperature.grad < 0
    assert set(terms) == {"drift_rms", "distance_scale", "temperature", "kde_nll"}
    torch.testing.assert_close(terms["temperature"], torch.tensor(0.05))


# ------------------------------------------------------------------------------------------ pointwise


def test_pointwise_loss_is_the_energy_score_of_each_condition():
    """Per condition, the mean of its rows is CALM's energy loss with one target:
    ``(2/k)·Σ‖x_i − y‖^β − 1/(k(k−1))·Σ_{i≠j}‖x_i − x_j‖^β``."""
    k, n, beta = 3, 2, 1.5
    head = PointwiseHead(**SMALL, batch_multiplier=k, beta=beta)
    generator = torch.Generator().manual_seed(4)
    noise = torch.randn(k * n, 2, generator=generator)
    x1 = torch.randn(n, 2, generator=generator).repeat(k, 1)
    head.flow_net = FixedSamples(torch.randn(k * n, 2, generator=generator))
    per_row, _ = head.objective(torch.zeros(k * n, 16), x1, noise)
    samples = group_rows(noise + head.flow_net.samples.detach(), k)
    for g in range(n):
        x, y = samples[g], x1[g]
        fidelity = sum((x[i] - y).norm() ** beta for i in range(k)) * 2 / k
        diversity = sum((x[i] - x[j]).norm() ** beta for i in range(k) for j in range(k) if i != j)
        expected = fidelity - diversity / (k * (k - 1))
        torch.testing.assert_close(group_rows(per_row, k)[g].mean(), expected, atol=1e-5, rtol=1e-5)


def test_from_lsd_samples_as_the_lsd_head_in_one_step():
    lsd = LSDHead(**SMALL).eval()
    randomise(lsd.flow_net, seed=5)
    pointwise = PointwiseHead.from_lsd(lsd, beta=0.5)
    assert pointwise.beta == 0.5 and pointwise.flow_net.model_channels == 32
    assert not any(k.startswith("time_embed") for k in pointwise.flow_net.state_dict())
    generator = torch.Generator().manual_seed(6)
    z, noise = torch.randn(64, 16, generator=generator), torch.randn(64, 2, generator=generator)
    expected = lsd.sample(z, noise, steps=1)
    assert (expected - noise).abs().mean() > 0.1  # the LSD step is not the identity
    torch.testing.assert_close(pointwise.sample(z, noise), expected, atol=1e-6, rtol=1e-6)
    with pytest.raises(TypeError, match="LSDHead"):
        PointwiseHead.from_lsd(FlowMatchingHead(**SMALL))


def test_from_consistency_samples_as_the_consistency_head_in_one_step():
    consistency = ConsistencyHead(**SMALL, sigma_data=0.5).eval()
    randomise(consistency.flow_net, seed=7)
    drifting = DriftingHead.from_consistency(consistency, batch_multiplier=2)
    generator = torch.Generator().manual_seed(8)
    z, noise = torch.randn(64, 16, generator=generator), torch.randn(64, 2, generator=generator)
    expected = consistency.sample(z, noise, steps=1)
    assert expected.abs().mean() > 0.1
    torch.testing.assert_close(drifting.sample(z, noise), expected, atol=1e-6, rtol=1e-6)
    with pytest.raises(TypeError, match="ConsistencyHead"):
        DriftingHead.from_consistency(LSDHead(**SMALL))


# ------------------------------------------------------------------------------------------ errors


def test_bad_options_raise_clear_errors():
    for kind in ("drifting", "pointwise"):
        with pytest.raises(ValueError, match="batch_multiplier must be >= 2"):
            build_head(kind, **SMALL, batch_multiplier=1)
    with pytest.raises(ValueError, match="temperatures must be positive"):
        DriftingHead(**SMALL, temperatures=(0.05, 0.0))
    with pytest.raises(ValueError, match="one start value"):
        DriftingHead(**SMALL, temperatures=(0.02, 0.05), learn_temperature=True)
    with pytest.raises(ValueError, match="beta must be in"):
        PointwiseHead(**SMALL, beta=2.0)
    with pytest.raises(ValueError, match="not 4 copies"):
        group_rows(torch.zeros(6, 2), 4)
    with pytest.raises(ValueError, match="exclude_self"):
        drifting_field(
            torch.zeros(1, 1, 2), torch.zeros(1, 1, 2), torch.zeros(1, 1, 2), 1.0, exclude_self=True
        )
