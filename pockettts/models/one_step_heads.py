"""Heads without a time input: Pocket TTS's "drifting" and "pointwise" flow types.

pocket-tts 4.0.1 (``models/flow_lm.py``) fixes how they sample from the backbone vector ``z`` and the
temperature-scaled noise ``ε``, in one network evaluation whatever number of steps is asked for:

* drifting: ``x = net(z, ε)`` (``drifting_decode``);
* pointwise: ``x = ε + net(z, ε)`` (``pointwise_decode``), the form of LSD's one ``0 → 1`` step.

``net`` is ``SimpleMLPAdaLN`` without time embedders, so ``flow_net.*`` is exactly the package's state
dict for these types. Kyutai has not published how they train either head: the objectives come from the
papers named in each class, and where adapting them to one data latent per condition needed a choice
of ours, the docstring says so.

Both objectives compare the ``k = batch_multiplier`` samples drawn for one condition with each other and
with the condition's data latent; ``group_rows`` gathers the copies that ``GenerationHead.loss`` lays out
at rows ``i, i + N, …`` into ``[N, k, D]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from pockettts.models.head_base import GenerationHead, Terms
from pockettts.modules.mlp import SimpleMLPAdaLN

if TYPE_CHECKING:
    from pockettts.models.heads import ConsistencyHead, LSDHead


def group_rows(x: torch.Tensor, copies: int) -> torch.Tensor:
    """``[k·N, ...]`` rows repeated as ``GenerationHead.loss`` repeats them -> ``[N, k, ...]``."""
    if x.shape[0] % copies:
        raise ValueError(f"{x.shape[0]} rows are not {copies} copies of a batch")
    return x.reshape(copies, x.shape[0] // copies, *x.shape[1:]).transpose(0, 1)


def ungroup_rows(x: torch.Tensor) -> torch.Tensor:
    """``group_rows``'s inverse: ``[N, k, ...]`` -> ``[k·N, ...]``."""
    return x.transpose(0, 1).reshape(-1, *x.shape[2:])


def mean_or_zero(x: torch.Tensor) -> torch.Tensor:
    """The mean of ``x``, 0 for an empty tensor (a batch without valid rows logs zeros, not NaN)."""
    return x.sum() / max(x.numel(), 1)


def pairwise_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``‖x_i − y_j‖`` ``[G, N, M]`` for ``x [G, N, D]``, ``y [G, M, D]``; exact near zero (no matmul
    expansion), so the gradient of a zero distance is finite."""
    return torch.cdist(x, y, compute_mode="donot_use_mm_for_euclid_dist")


def fold_times(net: SimpleMLPAdaLN, times: Sequence[float]) -> dict[str, torch.Tensor]:
    """State dict of a net without time input equal to ``net(c, *times, x)`` at the constant ``times``.

    ``SimpleMLPAdaLN.forward`` adds the mean of its time embeddings to ``cond_embed(c)``; at fixed times
    that mean is a constant vector, which joins ``cond_embed``'s bias. Everything else is copied."""
    if len(times) != net.num_time_conds:
        raise ValueError(f"the net takes {net.num_time_conds} time(s), got {len(times)}")
    state = {k: v.detach().clone() for k, v in net.state_dict().items() if not k.startswith("time_embed.")}
    bias = net.cond_embed.bias
    with torch.no_grad():
        for embed, time in zip(net.time_embed, times, strict=True):
            state["cond_embed.bias"] += embed(torch.full((1, 1), time).to(bias))[0] / len(times)
    return state


def drifting_field(
    x: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor,
    temperature: float | torch.Tensor,
    exclude_self: bool = False,
) -> torch.Tensor:
    """The drift ``V [G, N, D]`` of samples ``x [G, N, D]`` toward ``positives [G, P, D]`` and away from
    ``negatives [G, M, D]``, in ``G`` independent groups: Algorithm 2 of Deng et al., "Generative Modeling
    via Drifting" (arXiv 2602.04770).

    Kernel ``k(x, y) = exp(−‖x − y‖/temperature)`` (Eq. 12). The logits of the concatenated
    ``[positives, negatives]`` are softmax-normalised over ``y`` and, the paper's "extra softmax over
    {x}" (§3.3), over ``x``, then combined as ``sqrt(row · column)``. The field is Eq. 11,
    ``Σ k⁺·k⁻·(y⁺ − y⁻)`` under that joint normalisation, written as ``W⁺ @ y⁺ − W⁻ @ y⁻``. It is
    anti-symmetric (Prop. 3.1): swapping positives and negatives flips its sign, so it vanishes when they
    are the same samples. ``exclude_self``: ``negatives`` is ``x``, and no sample is repelled by itself.
    """
    logits = -torch.cat([pairwise_distances(x, positives), pairwise_distances(x, negatives)], dim=-1)
    if exclude_self:
        if negatives.shape != x.shape or x.shape[1] < 2:
            raise ValueError("exclude_self needs negatives = x and at least 2 samples per group")
        own = torch.eye(x.shape[1], dtype=torch.bool, device=x.device)
        logits[..., positives.shape[1] :] = logits[..., positives.shape[1] :].masked_fill(own, -math.inf)
    logits = logits / temperature
    weights = torch.sqrt(logits.softmax(dim=-1) * logits.softmax(dim=-2))
    to_positive, to_negative = weights.split([positives.shape[1], negatives.shape[1]], dim=-1)
    w_positive = to_positive * to_negative.sum(dim=-1, keepdim=True)
    w_negative = to_negative * to_positive.sum(dim=-1, keepdim=True)
    return w_positive @ positives - w_negative @ negatives


def log_laplace_kde(y: torch.Tensor, samples: torch.Tensor, bandwidth: torch.Tensor) -> torch.Tensor:
    """``log p̂(y) [G]``: the density at ``y [G, D]`` of the kernel estimate over ``samples [G, k, D]``
    with the drifting kernel ``exp(−‖·‖/h)``, normalised in ``D`` dimensions (its integral is
    ``h^D·Γ(D)·2π^{D/2}/Γ(D/2)``)."""
    dim, count = y.shape[-1], samples.shape[1]
    distances = pairwise_distances(y.unsqueeze(1), samples).squeeze(1)
    log_norm = math.lgamma(dim) + math.log(2) + dim / 2 * math.log(math.pi) - math.lgamma(dim / 2)
    log_kernel_mean = torch.logsumexp(-distances / bandwidth, dim=-1) - math.log(count)
    return log_kernel_mean - dim * torch.log(bandwidth) - log_norm


class DriftingHead(GenerationHead):
    """Drifting model (Deng, Li, Li, Du, He, arXiv 2602.04770): ``x = net(z, ε)`` trained so that the
    distribution of its samples stops drifting.

    From the paper, per call:

    * the loss (Eq. 6) ``‖x − stopgrad(x + V(x))‖²`` moves each sample along the drifting field ``V``
      (``drifting_field``: attraction to data, repulsion from generated samples, Algorithm 2);
    * feature normalisation (App. A.6, Eqs. 18-22): distances are measured in units of their batch mean
      ``d̄`` (stop-gradient), i.e. a temperature ``τ`` is the kernel scale ``τ·d̄``; the loss is taken on
      ``x/S`` with ``S = d̄/√D``. Ours: ``d̄`` averages the mean distance to positives and the mean
      distance to negatives, which is the paper's plain mean when they are as many (``N_pos = N_neg``),
      while with one positive a plain mean would be that of the sample pairs alone: near zero for a
      fresh head, whose samples all coincide, so every kernel would underflow;
    * drift normalisation (Eqs. 23-25): each ``V_τ`` is divided by its batch RMS per channel, and the
      normalised fields of all temperatures are summed (App. A.6, "multiple temperatures", default
      ``τ ∈ {0.02, 0.05, 0.2}``), which gives the gradient of App. A's "one loss per τ, summed";
    * the loss value is therefore not a quality measure; ``drift_rms`` (the raw field's RMS per
      channel, averaged over ``τ``) is, as ``‖V‖²`` in the paper (§3.3).

    Our choices, for a backbone that gives each condition ``z`` one data latent ``x1``: the
    ``k = batch_multiplier`` samples of a condition are each other's negatives (the paper reuses its
    generated batch as negatives, Alg. 1), and ``x1`` is the only positive (the paper's ``N_pos = 1``
    ablation, Table 2: FID 20.4 against 8.5 with 64 positives). Kyutai's notes for their drifting sampler
    read "kernel drift field, 64 negatives, learned temperature": the default ``batch_multiplier = 64``
    gives each sample 63 negatives (the paper's ``N_neg = 64`` too).

    ``learn_temperature`` (a guess at Kyutai's "learned temperature"; the paper fixes its set): one
    temperature, ``exp(log_temperature)``, a parameter outside ``flow_net`` (training only, not in
    the package's layout), fitted by maximum likelihood of ``x1`` under the kernel density estimate of
    the condition's samples with the same kernel (likelihood cross-validation of a bandwidth); the
    field uses it under stop-gradient. It tightens as the samples close in on the data.

    Sampling: one evaluation ``net(z, ε)`` whatever ``steps`` (as ``drifting_decode``).
    """

    num_time_conds = 0
    default_sample_steps = 1

    def __init__(
        self,
        latent_dim: int = 32,
        cond_dim: int = 1024,
        dim: int = 512,
        depth: int = 6,
        batch_multiplier: int = 64,
        temperatures: Sequence[float] = (0.02, 0.05, 0.2),
        learn_temperature: bool = False,
    ):
        super().__init__(latent_dim, cond_dim, dim, depth, batch_multiplier)
        if batch_multiplier < 2:
            raise ValueError(f"batch_multiplier must be >= 2 (samples repel each other): {batch_multiplier}")
        temperatures = tuple(float(t) for t in temperatures)
        if not temperatures or min(temperatures) <= 0:
            raise ValueError(f"temperatures must be positive, got {temperatures}")
        if learn_temperature and len(temperatures) != 1:
            raise ValueError(f"learn_temperature learns one temperature from one start value: {temperatures}")
        self.temperatures = temperatures
        start = torch.tensor(math.log(temperatures[0]))
        self.log_temperature = nn.Parameter(start) if learn_temperature else None

    @classmethod
    def from_consistency(cls, head: ConsistencyHead, **options) -> DriftingHead:
        """The consistency head's one-step sampler ``f(σ_d·ε, π/2) = −σ_d·F(z, π/2, ε)`` as a drifting
        head: the constant time folds into ``cond_embed``'s bias, ``−σ_d`` into the output layer. The
        dropped ``cos(π/2)·σ_d·ε`` term is ``4e-8·ε`` in float32. ``options`` go to the constructor."""
        from pockettts.models.heads import ConsistencyHead  # heads imports this module

        if not isinstance(head, ConsistencyHead):
            raise TypeError(f"from_consistency needs a ConsistencyHead, got {type(head).__name__}")
        net = head.flow_net
        state = fold_times(net, (math.pi / 2,))
        for name in ("final_layer.linear.weight", "final_layer.linear.bias"):
            state[name] *= -head.sigma_data
        drifting = cls(head.latent_dim, head.cond_dim, net.model_channels, net.num_res_blocks, **options)
        drifting.to(net.cond_embed.weight).flow_net.load_state_dict(state)
        return drifting

    def objective(self, z: torch.Tensor, x1: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, Terms]:
        k, dim = self.batch_multiplier, x1.shape[-1]
        x = self.flow_net(z, noise)
        samples = group_rows(x.detach(), k)  # [N, k, D]
        positives = group_rows(x1, k)[:, :1]  # [N, 1, D]: the copies of a row share x1
        learned = self.log_temperature.exp() if self.log_temperature is not None else None
        with torch.no_grad():
            to_positive = mean_or_zero(pairwise_distances(samples, positives))
            between = pairwise_distances(samples, samples).sum() / max(samples.shape[0] * k * (k - 1), 1)
            # d̄ (A.6), positive and negative pairs weighted alike
            scale = ((to_positive + between) / 2).clamp_min(torch.finfo(x.dtype).tiny)
            temperatures = [learned.detach()] if learned is not None else self.temperatures
            drift, rms = torch.zeros_like(samples), []
            for temperature in temperatures:
                field = drifting_field(samples, positives, samples, temperature * scale, exclude_self=True)
                rms.append(mean_or_zero(field.square()).sqrt())
                drift += field / rms[-1].clamp_min(torch.finfo(field.dtype).tiny)
        norm = scale / math.sqrt(dim)  # S: x/S has mean pair distance √D
        target = x.detach() / norm + ungroup_rows(drift)
        per_row = (x / norm - target).square().mean(dim=-1)
        terms: Terms = {"drift_rms": torch.stack(rms).mean(), "distance_scale": scale}
        if learned is None:
            return per_row, terms
        nll = -log_laplace_kde(positives[:, 0], samples, learned * scale)  # [N], gradient to τ only
        terms.update(temperature=learned, kde_nll=mean_or_zero(nll))
        return per_row + nll.repeat(k), terms

    def decode(self, z: torch.Tensor, noise: torch.Tensor, steps: int) -> torch.Tensor:
        return self.flow_net(z, noise)


class PointwiseHead(GenerationHead):
    """A one-step head sampling ``x = ε + net(z, ε)`` (Pocket TTS's "pointwise", LSD's ``0 → 1`` step).

    Kyutai's objective for it is unknown. Two ways to train one here:

    * ``from_lsd``: the exact one-step sampler of a trained LSD head, to start from or to distil into;
    * ``objective``: the energy score (Gneiting & Raftery 2007, Eq. 22, strictly proper for
      ``β ∈ (0, 2)``), the loss of CALM's one-step energy head (Shao et al., "Continuous Autoregressive
      Language Models", arXiv 2510.27688, §3.3): per condition, with the ``k = batch_multiplier``
      samples ``x_i`` and the data latent ``y = x1``,
      ``(2/k)·Σ_i ‖x_i − y‖^β − 1/(k(k − 1))·Σ_{i≠j} ‖x_i − x_j‖^β``, minimised in expectation only when
      the samples follow the data's conditional distribution. CALM draws 8 samples (our default ``k``)
      against 100 targets from its autoencoder's posterior; our codec gives one target per frame
      (``M = 1``, still unbiased). Distances are ``(‖·‖ + 1e-8)^β`` as CALM's code writes them.

    Sampling: one evaluation ``ε + net(z, ε)`` whatever ``steps`` (as ``pointwise_decode``).
    """

    num_time_conds = 0
    default_sample_steps = 1

    def __init__(
        self,
        latent_dim: int = 32,
        cond_dim: int = 1024,
        dim: int = 512,
        depth: int = 6,
        batch_multiplier: int = 8,
        beta: float = 1.0,
    ):
        super().__init__(latent_dim, cond_dim, dim, depth, batch_multiplier)
        if batch_multiplier < 2:
            raise ValueError(f"batch_multiplier must be >= 2 (samples are compared): {batch_multiplier}")
        if not 0.0 < beta < 2.0:
            raise ValueError(f"beta must be in (0, 2), where the energy score is strictly proper, got {beta}")
        self.beta = beta

    @classmethod
    def from_lsd(cls, head: LSDHead, **options) -> PointwiseHead:
        """The LSD head's one-step sampler ``ε + v(0, 1, ε)`` as a pointwise head, exactly (up to float
        rounding): the embeddings of ``s = 0`` and ``t = 1`` fold into ``cond_embed``'s bias.
        ``options`` go to the constructor."""
        from pockettts.models.heads import LSDHead  # heads imports this module

        if not isinstance(head, LSDHead):
            raise TypeError(f"from_lsd needs an LSDHead, got {type(head).__name__}")
        net = head.flow_net
        pointwise = cls(head.latent_dim, head.cond_dim, net.model_channels, net.num_res_blocks, **options)
        pointwise.to(net.cond_embed.weight).flow_net.load_state_dict(fold_times(net, (0.0, 1.0)))
        return pointwise

    def objective(self, z: torch.Tensor, x1: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, Terms]:
        k = self.batch_multiplier
        samples = group_rows(noise + self.flow_net(z, noise), k)  # [N, k, D]
        target = group_rows(x1, k)[:, :1]
        fidelity = (pairwise_distances(samples, target).squeeze(-1) + 1e-8) ** self.beta  # [N, k]
        spread = (pairwise_distances(samples, samples) + 1e-8) ** self.beta  # [N, k, k]
        own = torch.eye(k, dtype=torch.bool, device=spread.device)
        diversity = spread.masked_fill(own, 0.0).sum(dim=-1) / (k - 1)  # [N, k]
        per_row = 2 * fidelity - diversity  # averages to the energy score over the k rows of a condition
        terms = {"fidelity": mean_or_zero(fidelity), "diversity": mean_or_zero(diversity)}
        return ungroup_rows(per_row), terms

    def decode(self, z: torch.Tensor, noise: torch.Tensor, steps: int) -> torch.Tensor:
        return noise + self.flow_net(z, noise)
