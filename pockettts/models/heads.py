"""Generation heads behind one interface (``head_base.GenerationHead``), and the registry.

* ``LSDHead``: Lagrangian self-distillation, the released Pocket TTS objective (one-step sampling).
* ``ConsistencyHead``: continuous-time consistency training in TrigFlow form (sCM), the CALM paper's head.
* ``FlowMatchingHead``: plain conditional flow matching, a multi-step baseline.
* ``DriftingHead`` and ``PointwiseHead`` (``one_step_heads``): Pocket TTS's heads without a time input.

Convention (Pocket TTS): ``x1`` is the target latent, ``ε`` standard normal noise; the flow heads
interpolate ``x_t = t·x1 + (1 − t)·ε`` with ``t = 0`` at the noise.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
from torch import nn

from pockettts.models.head_base import GenerationHead, Terms
from pockettts.models.one_step_heads import DriftingHead, PointwiseHead


def sample_noise(
    shape: tuple[int, ...] | torch.Size,
    temperature: float = 1.0,
    clamp: float | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Gaussian noise with std ``sqrt(temperature)``, truncated to ``[-clamp, clamp]`` when ``clamp`` is set
    (a truncated normal, as in pocket-tts's ``noise_clamp``: the bound is absolute, not in stds)."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if clamp is not None and clamp <= 0:
        raise ValueError(f"clamp must be > 0 or None, got {clamp}")
    noise = torch.empty(shape, device=device, dtype=dtype)
    std = math.sqrt(temperature)
    if std == 0.0:
        return noise.zero_()
    if clamp is None:
        return noise.normal_(0.0, std, generator=generator)
    return nn.init.trunc_normal_(noise, mean=0.0, std=std, a=-clamp, b=clamp, generator=generator)


class LogWeightMLP(nn.Sequential):
    """Learned log-weight ``w(inputs) [N]`` of a loss term (EDM2-style uncertainty weighting).

    A ReLU MLP on the concatenated ``[N, 1]`` inputs; a term becomes ``term·exp(w)/D − w``, whose optimum
    over ``w`` is ``exp(w) = D / term``, so each term is normalised by its own running scale. Layers are
    ``nn.Sequential`` indices 0, 2, 4, 6 to match Kyutai's checkpoint keys (``w_s_t.0.weight`` ...).

    ``zero_init="all"`` is Kyutai's LSD init: every layer zero. The hidden activations then stay zero and
    only the last bias ever receives gradient, so ``w`` is in effect one learned scalar shared by all
    times. ``"last"`` zeroes only the output layer, so ``w`` starts at 0 yet can learn a function of time.
    """

    def __init__(
        self, num_inputs: int, hidden: int = 32, depth: int = 3, zero_init: Literal["all", "last"] = "all"
    ):
        if zero_init not in ("all", "last"):
            raise ValueError(f"zero_init must be 'all' or 'last', got {zero_init!r}")
        layers: list[nn.Module] = []
        width = num_inputs
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        layers.append(nn.Linear(width, 1))
        super().__init__(*layers)
        zeroed = [m for m in self if isinstance(m, nn.Linear)] if zero_init == "all" else [layers[-1]]
        for linear in zeroed:
            nn.init.zeros_(linear.weight)
            nn.init.zeros_(linear.bias)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return super().forward(torch.cat(inputs, dim=-1)).squeeze(-1)

    def weigh(self, term: torch.Tensor, dim: int, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``term [N]`` (a squared error summed over ``dim`` channels) -> (weighted term [N], w [N])."""
        log_weight = self(*inputs)
        return term * log_weight.exp() / dim - log_weight, log_weight


class _GradientToInputOnly(torch.autograd.Function):
    """``y = fn(x)`` whose backward reaches ``x`` but none of ``fn``'s parameters or captured tensors."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        leaf = x.detach().requires_grad_(True)
        with torch.enable_grad():
            y = fn(leaf)
        ctx.save_for_backward(leaf, y)
        return y.detach()

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor) -> tuple[torch.Tensor, None]:
        leaf, y = ctx.saved_tensors
        (grad_x,) = torch.autograd.grad(y, leaf, grad_y)
        return grad_x, None


def logit_normal(like: torch.Tensor, count: int, mean: float, std: float) -> torch.Tensor:
    """``[N, count]`` logits ~ N(mean, std²), one row per row of ``like``; ``sigmoid`` of them is
    logit-normal."""
    return torch.randn(like.shape[0], count, device=like.device, dtype=like.dtype) * std + mean


class LSDHead(GenerationHead):
    """Lagrangian self-distillation (arXiv 2505.18825), as in Kyutai's ``training/modules/samplers.py``.

    ``v(s, t, x)`` is the flow-map velocity: the jump from time ``s`` to ``t`` is ``x + (t − s)·v``.
    Per row (``D`` = latent size):

    * diagonal term: ``t`` logit-normal, ``‖v(t, t, x_t) − (x1 − ε)‖²``;
    * self-distillation term: ``s ≤ t`` (sorted pair of logit-normal draws),
      ``X = x_s + (t − s)·v(s, t, x_s)``, ``dX/dt = v + (t − s)·∂v/∂t`` (one ``jvp``), target
      ``v(t, t, X)`` under stop-gradient: "minimal" lets the gradient reach ``X`` (hence the jump) but
      not the target's weights or ``z``; "classic" detaches the target entirely. ``‖dX/dt − target‖²``;
    * with ``normalize``, each term ``e`` becomes ``e·exp(w)/D − w`` with ``w = w_s_t(t, t)`` resp.
      ``w_s_t(s, t)`` (Kyutai's sign: the weight multiplies by ``exp(+w)``);
    * loss ``p_equal·diag + (1 − p_equal)·distill``. In training the distill term is computed on a
      ``distill_prob`` fraction of calls, drawn from a generator seeded with ``distill_seed`` and owned by
      the head (every DDP rank takes the same branch), and then divided by ``distill_prob``. In eval mode it
      is always computed, unscaled.

    Sampling: ``steps`` Euler steps of the flow map, ``x ← x + v(i/n, (i+1)/n, x)/n``; one step gives
    ``ε + v(0, 1, ε)``.
    """

    num_time_conds = 2
    default_sample_steps = 1

    def __init__(
        self,
        latent_dim: int = 32,
        cond_dim: int = 1024,
        dim: int = 512,
        depth: int = 6,
        batch_multiplier: int = 1,
        p_equal: float = 0.75,
        lognorm_mean: float = 0.4,
        lognorm_std: float = 1.0,
        normalize: bool = True,
        weight_dims: int = 32,
        weight_depth: int = 3,
        weight_zero_init: Literal["all", "last"] = "all",
        stopgrad: Literal["minimal", "classic"] = "minimal",
        distill_prob: float = 0.25,
        distill_seed: int = 0,
    ):
        super().__init__(latent_dim, cond_dim, dim, depth, batch_multiplier)
        if not 0.0 <= p_equal <= 1.0:
            raise ValueError(f"p_equal must be in [0, 1], got {p_equal}")
        if not 0.0 < distill_prob <= 1.0:
            raise ValueError(f"distill_prob must be in (0, 1], got {distill_prob}")
        if stopgrad not in ("minimal", "classic"):
            raise ValueError(f"stopgrad must be 'minimal' or 'classic', got {stopgrad!r}")
        self.p_equal = p_equal
        self.lognorm_mean = lognorm_mean
        self.lognorm_std = lognorm_std
        self.stopgrad = stopgrad
        self.distill_prob = distill_prob
        self.distill_seed = distill_seed
        # The draw is a function of (seed, call count); the count is a buffer, so it is saved in
        # checkpoints and a resumed run takes the same branches as an uninterrupted one.
        self.register_buffer("distill_calls", torch.zeros((), dtype=torch.long))
        self.w_s_t = LogWeightMLP(2, weight_dims, weight_depth, weight_zero_init) if normalize else None

    def draw_distill_step(self) -> bool:
        """Whether this training call computes the distill term (advances the head's call count)."""
        calls = int(self.distill_calls)
        self.distill_calls += 1
        if self.distill_prob >= 1.0:
            return True
        # a host generator: the branch drawn is the same on every device
        generator = torch.Generator().manual_seed(self.distill_seed * 1_000_003 + calls)
        return float(torch.rand((), generator=generator, device=generator.device)) < self.distill_prob

    def objective(self, z: torch.Tensor, x1: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, Terms]:
        dim = x1.shape[-1]
        terms: Terms = {}

        t = torch.sigmoid(logit_normal(x1, 1, self.lognorm_mean, self.lognorm_std))
        x_t = t * x1 + (1 - t) * noise
        flow_diag = (self.flow_net(z, t, t, x_t) - (x1 - noise)).square().sum(dim=-1)
        terms["flow_diag"] = flow_diag.mean()
        if self.w_s_t is not None:
            flow_diag, w_diag = self.w_s_t.weigh(flow_diag, dim, t, t)
            terms["w_diag"] = w_diag.mean()

        if self.training and not self.draw_distill_step():
            return self.p_equal * flow_diag, terms

        pair = torch.sigmoid(logit_normal(x1, 2, self.lognorm_mean, self.lognorm_std))
        s, t = pair.min(dim=-1, keepdim=True).values, pair.max(dim=-1, keepdim=True).values
        x_s = s * x1 + (1 - s) * noise
        v, dv_dt = torch.func.jvp(
            lambda s_, t_, x_: self.flow_net(z, s_, t_, x_),
            (s, t, x_s),
            (torch.zeros_like(s), torch.ones_like(t), torch.zeros_like(x_s)),
        )
        x_jump = x_s + (t - s) * v
        dx_dt = v + (t - s) * dv_dt
        if self.stopgrad == "minimal":
            target = _GradientToInputOnly.apply(x_jump, lambda y: self.flow_net(z, t, t, y))
        else:
            with torch.no_grad():
                target = self.flow_net(z, t, t, x_jump)
        flow_distill = (dx_dt - target).square().sum(dim=-1)
        terms["flow_distill"] = flow_distill.mean()
        if self.w_s_t is not None:
            flow_distill, w_distill = self.w_s_t.weigh(flow_distill, dim, s, t)
            terms["w_distill"] = w_distill.mean()

        distill_weight = (1 - self.p_equal) / (self.distill_prob if self.training else 1.0)
        return self.p_equal * flow_diag + distill_weight * flow_distill, terms

    def decode(self, z: torch.Tensor, noise: torch.Tensor, steps: int) -> torch.Tensor:
        x = noise
        ones = torch.ones_like(noise[:, :1])
        for i in range(steps):
            x = x + self.flow_net(z, ones * (i / steps), ones * ((i + 1) / steps), x) / steps
        return x


class ConsistencyHead(GenerationHead):
    """Continuous-time consistency training in TrigFlow form (Lu & Song, "sCM", arXiv 2410.11081), the
    one-step head of the CALM paper (arXiv 2509.06926, its Eq. 3: backbone and head trained jointly).

    Equation numbers below are sCM's. Data ``x0`` (our ``x1``, the normalised target latent), noise
    ``z = σ_d·ε``:

    * TrigFlow path (§3): ``x_t = cos(t)·x0 + sin(t)·σ_d·ε``, ``t ∈ [0, π/2]``, pure noise at ``π/2``;
    * consistency function (Eq. 5): ``f(x_t, t) = cos(t)·x_t − sin(t)·σ_d·F(x_t/σ_d, c_noise(t))`` with
      ``F`` the head network and ``c_noise(t) = t`` (§4.1: raw radians; the network's sin/cos time
      features have frequencies ≤ 1, the "positional" embedding §4.1 asks for);
    * time proposal (Eq. 8, App. G.2): ``t = arctan(e^τ/σ_d)``, ``τ ~ N(p_mean, p_std²)``;
    * consistency training (sCT): the PF-ODE velocity is the unbiased one-sample estimate
      ``dx_t/dt = cos(t)·σ_d·ε − sin(t)·x0``;
    * tangent (Eq. 6) times the prior weighting ``1/(σ_d·tan t)`` of Eq. 8, i.e. ``cos(t)·df⁻/dt``:
      ``g = −cos²(t)·(σ_d·F⁻ − dx_t/dt) − r·cos(t)·sin(t)·(x_t + σ_d·dF⁻/dt)`` (Algorithm 1), with
      ``F⁻`` the current weights under stop-gradient and ``cos(t)·sin(t)·σ_d·dF⁻/dt`` one
      ``torch.func.jvp`` rearranged as in §5.1 (the scaling goes into the tangent vector, which keeps
      the product small near ``t = 0`` and ``π/2`` in low precision);
    * tangent warmup (§4.2): ``r = min(1, updates / tangent_warmup_steps)`` ramps the unstable second
      term in. ``updates`` counts training calls of ``loss`` (micro-batches: with gradient accumulation
      over ``k`` of them the ramp spans ``tangent_warmup_steps / k`` optimizer steps); it is a buffer,
      so a resumed run continues the ramp. sCM uses 10k iterations (App. G.2), 2.5-10% of its runs;
      short runs need a proportionally shorter ramp, since with ``r ≈ 0`` the head learns a
      denoiser whose one-step samples fall to the conditional mean;
    * tangent normalisation (§4.2): ``g ← g / (‖g‖ + tangent_norm_c)`` per row (``c = 0.1``);
    * adaptive weighting (Eq. 8): ``‖F(x_t/σ_d, t) − F⁻ − g‖²·exp(w(t))/D − w(t)`` with a learned
      log-weight MLP ``w_t`` on ``t`` (output zero at init). The gradient is sCM's ``−2·gᵀ∇F`` (Eq. 2
      under TrigFlow, §4.2); the loss value stays near ``‖g‖² < 1`` and is not a quality measure.

    Not taken from sCM: adaptive double normalisation (§4.1; the AdaLN MLP keeps Pocket TTS's shapes so
    checkpoints stay interchangeable). ``σ_d = 1`` suits the normalised latents and is CALM's Eq. 3
    (``x_t = cos t·x + sin t·ε``).

    Sampling (one step, as CALM samples): ``f(σ_d·noise, π/2)``. sCM starts at ``arctan(80/σ_d)`` (EDM's
    ``σ_max``, App. G.2), which is ``π/2 − 0.0125`` at ``σ_d = 1``; TrigFlow's zero-SNR end ``π/2``
    is exact in this parametrisation (App. B.1), so we start there. With ``n`` steps (multistep
    consistency sampling, Song et al. 2023): ``x0 = f(x, t_i)``, then re-noise
    ``x = cos(t_{i+1})·x0 + sin(t_{i+1})·σ_d·ε'`` with fresh ``ε' ~ N(0, renoise_std²)`` from
    ``generator``, at the times of ``sample_times``: two steps re-noise at sCM's ``t_mid = 1.1``
    (App. G.2; ``t`` sets the signal-to-noise ratio ``1/tan²t`` whatever ``σ_d``, App. B.2), more
    steps at equally spaced times below it (a choice of ours).
    """

    num_time_conds = 1
    default_sample_steps = 1
    multistep_time = 1.1  # sCM's intermediate time of two-step sampling (App. G.2, Table 6)

    def __init__(
        self,
        latent_dim: int = 32,
        cond_dim: int = 1024,
        dim: int = 512,
        depth: int = 6,
        batch_multiplier: int = 1,
        sigma_data: float = 1.0,
        p_mean: float = -1.0,
        p_std: float = 1.4,
        tangent_norm_c: float = 0.1,
        tangent_warmup_steps: int = 10_000,
        normalize: bool = True,
        weight_dims: int = 32,
        weight_depth: int = 3,
    ):
        super().__init__(latent_dim, cond_dim, dim, depth, batch_multiplier)
        if sigma_data <= 0 or p_std <= 0 or tangent_norm_c <= 0:
            raise ValueError("sigma_data, p_std and tangent_norm_c must be > 0")
        if tangent_warmup_steps < 0:
            raise ValueError(f"tangent_warmup_steps must be >= 0, got {tangent_warmup_steps}")
        self.sigma_data = sigma_data
        self.p_mean = p_mean
        self.p_std = p_std
        self.tangent_norm_c = tangent_norm_c
        self.tangent_warmup_steps = tangent_warmup_steps
        self.w_t = LogWeightMLP(1, weight_dims, weight_depth, zero_init="last") if normalize else None
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def consistency_fn(self, z: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Eq. 5: ``f(x_t, t) = cos(t)·x_t − sin(t)·σ_d·F(x_t/σ_d, t)`` for ``x_t [N, D]``, ``t [N, 1]``."""
        sd = self.sigma_data
        return torch.cos(t) * x_t - torch.sin(t) * sd * self.flow_net(z, t, x_t / sd)

    def tangent_warmup(self) -> float:
        """``r`` of Algorithm 1 for the next training call."""
        if self.tangent_warmup_steps == 0:
            return 1.0
        return min(1.0, float(self.num_updates) / self.tangent_warmup_steps)

    @torch.no_grad()
    def weighted_tangent(
        self, z: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, dx_dt: torch.Tensor, ramp: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(F⁻ [N, D], g [N, D])``: the stop-gradient network output and ``g = cos(t)·df⁻/dt`` (Eq. 6
        with Eq. 8's prior weighting; the ``sin(t)`` part scaled by ``ramp``), before normalisation,
        for ``x_t [N, D]`` at ``t [N, 1]`` moving at ``dx_dt [N, D]``."""
        sd = self.sigma_data
        cos_t, sin_t = torch.cos(t), torch.sin(t)
        # §5.1: JVP of F⁻ at (x_t/σ_d, t) along (cos t·sin t·dx_t/dt, cos t·sin t·σ_d)
        # = cos(t)·sin(t)·σ_d·dF⁻/dt, since d(x_t/σ_d)/dt = (dx_t/dt)/σ_d.
        cos_sin = cos_t * sin_t
        f_minus, scaled_df_dt = torch.func.jvp(
            lambda x_, t_: self.flow_net(z, t_, x_), (x_t / sd, t), (cos_sin * dx_dt, cos_sin * sd)
        )
        g = -(cos_t**2) * (sd * f_minus - dx_dt) - ramp * (cos_sin * x_t + scaled_df_dt)
        return f_minus, g

    def objective(self, z: torch.Tensor, x1: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, Terms]:
        sd = self.sigma_data
        tau = torch.randn_like(x1[:, :1]) * self.p_std + self.p_mean
        t = torch.atan(tau.exp() / sd)  # tan(t) = e^τ/σ_d: the log-normal proposal
        cos_t, sin_t = torch.cos(t), torch.sin(t)
        x_t = cos_t * x1 + sin_t * sd * noise
        dx_dt = cos_t * sd * noise - sin_t * x1  # sCT's one-sample PF-ODE velocity

        ramp = self.tangent_warmup() if self.training else 1.0
        f_minus, g = self.weighted_tangent(z, x_t, t, dx_dt, ramp)
        g_norm = g.norm(dim=-1, keepdim=True)
        g = g / (g_norm + self.tangent_norm_c)
        if self.training:
            self.num_updates += 1

        consistency = (self.flow_net(z, t, x_t / sd) - f_minus - g).square().sum(dim=-1)
        terms: Terms = {"consistency": consistency.mean(), "tangent_norm": g_norm.mean()}
        if self.w_t is None:
            return consistency / x1.shape[-1], terms
        weighted, log_weight = self.w_t.weigh(consistency, x1.shape[-1], t)
        terms["w_t"] = log_weight.mean()
        return weighted, terms

    @torch.no_grad()
    def sample(
        self,
        z: torch.Tensor,
        noise: torch.Tensor,
        steps: int | None = None,
        *,
        generator: torch.Generator | None = None,
        renoise_std: float = 1.0,
    ) -> torch.Tensor:
        """As ``GenerationHead.sample``; multistep sampling re-noises with ``N(0, renoise_std²)`` draws
        from ``generator`` (one step needs neither)."""
        lead = noise.shape[:-1]
        z, noise, steps = self._check_sample_args(z, noise, steps)
        return self.decode(z, noise, steps, generator, renoise_std).reshape(*lead, self.latent_dim)

    def decode(
        self,
        z: torch.Tensor,
        noise: torch.Tensor,
        steps: int,
        generator: torch.Generator | None = None,
        renoise_std: float = 1.0,
    ) -> torch.Tensor:
        ones = torch.ones_like(noise[:, :1])
        times = self.sample_times(steps)
        x = self.sigma_data * noise
        for t, t_next in zip(times[:-1], times[1:], strict=True):
            x0 = self.consistency_fn(z, x, ones * t)
            fresh = torch.randn(noise.shape, generator=generator, device=noise.device, dtype=noise.dtype)
            x = math.cos(t_next) * x0 + math.sin(t_next) * self.sigma_data * renoise_std * fresh
        return self.consistency_fn(z, x, ones * times[-1])

    def sample_times(self, steps: int) -> list[float]:
        """The ``steps`` times ``f`` is evaluated at: ``π/2``, then ``multistep_time·(n − i)/(n − 1)``
        for ``i = 1 … n − 1`` (``[π/2, 1.1]`` for two steps)."""
        return [math.pi / 2] + [self.multistep_time * (steps - i) / (steps - 1) for i in range(1, steps)]


class FlowMatchingHead(GenerationHead):
    """Conditional (rectified) flow matching, the multi-step baseline (Kyutai's ``FlowMatching``).

    ``x_t = (1 − (1 − σ_min)·t)·ε + t·x1``, target velocity ``x1 − (1 − σ_min)·ε`` (``x1 − ε`` with the
    default ``σ_min = 0``; Kyutai uses 0.001), loss ``‖v(t, x_t) − target‖²`` averaged over channels.
    ``t`` uniform (Kyutai) or logit-normal. Sampling: ``steps`` Euler steps from ``t = 0`` (default 16).
    """

    num_time_conds = 1
    default_sample_steps = 16

    def __init__(
        self,
        latent_dim: int = 32,
        cond_dim: int = 1024,
        dim: int = 512,
        depth: int = 6,
        batch_multiplier: int = 1,
        time_distribution: Literal["uniform", "logit_normal"] = "uniform",
        lognorm_mean: float = 0.0,
        lognorm_std: float = 1.0,
        sigma_min: float = 0.0,
    ):
        super().__init__(latent_dim, cond_dim, dim, depth, batch_multiplier)
        if time_distribution not in ("uniform", "logit_normal"):
            raise ValueError(
                f"time_distribution must be 'uniform' or 'logit_normal', got {time_distribution!r}"
            )
        if not 0.0 <= sigma_min < 1.0:
            raise ValueError(f"sigma_min must be in [0, 1), got {sigma_min}")
        self.time_distribution = time_distribution
        self.lognorm_mean = lognorm_mean
        self.lognorm_std = lognorm_std
        self.sigma_min = sigma_min

    def objective(self, z: torch.Tensor, x1: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, Terms]:
        if self.time_distribution == "uniform":
            t = torch.rand_like(x1[:, :1])
        else:
            t = torch.sigmoid(logit_normal(x1, 1, self.lognorm_mean, self.lognorm_std))
        keep = 1 - self.sigma_min
        x_t = (1 - keep * t) * noise + t * x1
        flow = (self.flow_net(z, t, x_t) - (x1 - keep * noise)).square().mean(dim=-1)
        return flow, {"flow": flow.mean()}

    def decode(self, z: torch.Tensor, noise: torch.Tensor, steps: int) -> torch.Tensor:
        x = noise
        ones = torch.ones_like(noise[:, :1])
        for i in range(steps):
            x = x + self.flow_net(z, ones * (i / steps), x) / steps
        return x


HEADS: dict[str, type[GenerationHead]] = {
    "lsd": LSDHead,
    "consistency": ConsistencyHead,
    "flow_matching": FlowMatchingHead,
    "drifting": DriftingHead,
    "pointwise": PointwiseHead,
}


def build_head(kind: str, **kwargs) -> GenerationHead:
    """A head by name (``lsd``, ``consistency``, ``flow_matching``, ``drifting``, ``pointwise``); ``kwargs``
    go to its constructor."""
    if kind not in HEADS:
        raise ValueError(f"unknown head kind {kind!r}; choose one of {sorted(HEADS)}")
    return HEADS[kind](**kwargs)
