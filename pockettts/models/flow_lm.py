"""The TTS backbone ("FlowLM"): a causal transformer over ``[voice, text, BOS, audio latents]`` that
emits one conditioning vector ``z`` per audio frame, plus an end-of-speech logit.

Sequence of one row (every part optional except BOS; a dropped part is *removed*, not zeroed):

    [bos_before_voice] [voice frames · speaker_proj] [text token embeddings] [BOS] [x_0 ... x_{F-1}]

The output at BOS predicts ``x_0``; the output at ``x_j`` predicts ``x_{j+1}``; the output at the last
frame predicts end of speech. The latents the backbone *reads* can be noise-augmented during
training (CALM, ``ContextNoise``); the targets are always clean. An optional short-context
transformer over the last K clean latents adds its output to ``z`` (CALM). Parameter names follow
the released Pocket TTS FlowLM (see ``pockettts.compat.flow_lm``).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from pockettts.models.heads import build_head, sample_noise
from pockettts.models.sampling import SamplingOptions
from pockettts.modules.streaming import State, StreamingModule, child_state, flatten_state
from pockettts.modules.transformer import StreamingTransformer


class LookupTableText(nn.Module):
    """Token embedding with one extra row for padding (``vocab_size``), as in Pocket TTS.

    With ``rank`` the table is low-rank (Pocket TTS ``lookup_table.rank``): ``rank``-wide rows and a
    bias-free ``proj`` to ``dim``, which shrinks the table of a narrow model by ``dim / rank``.
    """

    def __init__(self, vocab_size: int, dim: int, rank: int | None = None):
        super().__init__()
        if rank is not None and rank <= 0:
            raise ValueError(f"text embedding rank must be positive, got {rank}")
        self.vocab_size = vocab_size
        self.embed = nn.Embedding(vocab_size + 1, dim if rank is None else rank)
        self.proj = None if rank is None else nn.Linear(rank, dim, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[..., L]`` ids -> ``[..., L, dim]``."""
        embedded = self.embed(tokens)
        return embedded if self.proj is None else self.proj(embedded)


class ContextNoise(nn.Module):
    """CALM noise augmentation of the backbone's context: ``sqrt(k)·ε + sqrt(1−k)·x`` per position.

    ``k`` is drawn per position from ``distribution`` scaled to ``[0, max_level]`` (``max_level`` is the
    ablation knob; 0 turns the augmentation off): ``uniform`` (the paper's U(0, 1) at max 1) or
    ``beta`` (``Beta(beta_a, beta_b)``). Only active in training mode. With ``condition_on_level``
    the level is also given to the backbone through a bias-free linear embedding (zero at k = 0,
    hence a no-op at inference).
    """

    def __init__(
        self,
        max_level: float = 1.0,
        distribution: str = "uniform",
        beta_a: float = 1.0,
        beta_b: float = 1.0,
        condition_on_level: bool = False,
        d_model: int | None = None,
    ):
        super().__init__()
        if not 0.0 <= max_level <= 1.0:
            raise ValueError(f"context noise max_level must be in [0, 1], got {max_level}")
        if distribution not in ("uniform", "beta"):
            raise ValueError(f"context noise distribution must be 'uniform' or 'beta', got {distribution!r}")
        if condition_on_level and d_model is None:
            raise ValueError("condition_on_level needs d_model")
        self.max_level = max_level
        self.distribution = distribution
        self.beta = torch.distributions.Beta(torch.tensor(float(beta_a)), torch.tensor(float(beta_b)))
        self.level_embedding = nn.Linear(1, d_model, bias=False) if condition_on_level else None
        if self.level_embedding is not None:
            nn.init.zeros_(self.level_embedding.weight)

    def sample_levels(self, shape: torch.Size, device: torch.device) -> torch.Tensor:
        if self.distribution == "uniform":
            unit = torch.rand(shape, device=device)
        else:
            unit = self.beta.sample(shape).to(device)
        return self.max_level * unit

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` ``[B, T, D]`` -> (noisy ``[B, T, D]``, levels ``[B, T]``; all zero outside training)."""
        if not self.training or self.max_level == 0.0:
            return x, x.new_zeros(x.shape[:2])
        levels = self.sample_levels(x.shape[:2], x.device).to(x.dtype)
        noisy = levels.sqrt()[..., None] * torch.randn_like(x) + (1 - levels).sqrt()[..., None] * x
        return noisy, levels

    def level_features(self, levels: torch.Tensor) -> torch.Tensor | float:
        """What to add to the audio input embeddings ``[B, T, d_model]`` (0 without conditioning)."""
        return 0.0 if self.level_embedding is None else self.level_embedding(levels[..., None])


class ShortContextTransformer(StreamingModule):
    """A small causal transformer over the last ``context`` clean latents (CALM); its output, projected
    to ``d_model`` by a zero-initialised layer (a no-op at init), is added to the backbone's ``z``."""

    def __init__(
        self,
        latent_dim: int,
        d_model: int,
        width: int = 256,
        num_heads: int = 4,
        num_layers: int = 2,
        context: int = 10,
    ):
        super().__init__()
        self.input_linear = nn.Linear(latent_dim, width, bias=False)
        self.transformer = StreamingTransformer(width, num_heads, num_layers, 4 * width, context=context)
        self.output_linear = nn.Linear(width, d_model, bias=False)
        nn.init.zeros_(self.output_linear.weight)

    def forward(self, latents: torch.Tensor, state: State | None = None) -> torch.Tensor:
        """Normalised latents ``[B, T, latent_dim]`` (BOS first) -> ``[B, T, d_model]``."""
        return self.output_linear(
            self.transformer(self.input_linear(latents), child_state(state, "transformer"))
        )


class FlowLM(StreamingModule):
    """Backbone + generation head + EOS head.

    All arguments are plain data (recorded in ``self.config`` and written into exports by
    ``pockettts.models.bundle``, so a checkpoint rebuilds its own model without any config system).

    Args:
        head: ``{"kind": "lsd" | "consistency" | "flow_matching", **options}`` for
            ``pockettts.models.heads.build_head`` (``latent_dim``/``cond_dim`` are filled in here).
        latent_dim: codec latent width (32).
        voice_dim: width of voice-prompt features (32 for v2 codecs; 512 for the v1 codec).
        d_model, num_heads, num_layers, dim_feedforward, max_period: the transformer (released
            teacher: 1024, 16, 24, 4096, 1e4; student: 6 layers).
        vocab_size: tokenizer size (the embedding has one more row, for padding).
        insert_bos_before_voice: a learned vector opens every sequence (all v2 models).
        stats_ema_decay, stats_ema_steps: latent normalisation statistics are an EMA of batch
            statistics during the first ``stats_ema_steps`` training steps, then frozen.
        context_noise, short_context: options of ``ContextNoise`` / ``ShortContextTransformer``
            (the CALM additions; ``None`` = off, as in Pocket TTS).
        attn_dim, num_kv_heads: projected and grouped-query attention (see
            ``pockettts.modules.transformer.StreamingMultiheadAttention``); ``None`` = ``d_model`` and
            ``num_heads`` (the 100M models).
        z_dim: a bias-free ``z_proj`` (``d_model -> z_dim``) after ``out_norm``: the latent bottleneck
            of the 2026-10 small models. The head and ``out_eos`` then read ``z_dim``-wide vectors, and
            every ``z`` this model returns is after it. ``None``: ``z`` is ``d_model`` wide.
        text_rank: low-rank text table (``LookupTableText``'s ``rank``); ``None``: full rank.
    """

    def __init__(
        self,
        head: dict[str, Any] | None = None,
        latent_dim: int = 32,
        voice_dim: int | None = None,
        d_model: int = 1024,
        num_heads: int = 16,
        num_layers: int = 24,
        dim_feedforward: int = 4096,
        max_period: float = 10_000.0,
        vocab_size: int = 4000,
        insert_bos_before_voice: bool = True,
        stats_ema_decay: float = 0.999,
        stats_ema_steps: int = 1000,
        context_noise: dict[str, Any] | None = None,
        short_context: dict[str, Any] | None = None,
        attn_dim: int | None = None,
        num_kv_heads: int | None = None,
        z_dim: int | None = None,
        text_rank: int | None = None,
    ):
        super().__init__()
        head = dict(head or {"kind": "lsd"})
        self.config: dict[str, Any] = copy.deepcopy(dict(
            head=head, latent_dim=latent_dim, voice_dim=voice_dim, d_model=d_model,
            num_heads=num_heads, num_layers=num_layers, dim_feedforward=dim_feedforward,
            max_period=max_period, vocab_size=vocab_size, insert_bos_before_voice=insert_bos_before_voice,
            stats_ema_decay=stats_ema_decay,
            stats_ema_steps=stats_ema_steps, context_noise=context_noise, short_context=short_context,
            attn_dim=attn_dim, num_kv_heads=num_kv_heads, z_dim=z_dim, text_rank=text_rank,
        ))  # fmt: skip
        self.latent_dim = latent_dim
        self.d_model = d_model
        self.stats_ema_decay = stats_ema_decay
        self.stats_ema_steps = stats_ema_steps
        if z_dim is not None and z_dim <= 0:
            raise ValueError(f"z_dim must be positive, got {z_dim}")
        self.z_dim = d_model if z_dim is None else z_dim
        self.head = build_head(head.pop("kind"), latent_dim=latent_dim, cond_dim=self.z_dim, **head)
        self.conditioner = LookupTableText(vocab_size, d_model, text_rank)
        self.speaker_proj_weight = nn.Parameter(torch.empty(d_model, voice_dim or latent_dim))
        self.bos_before_voice = nn.Parameter(torch.randn(1, 1, d_model)) if insert_bos_before_voice else None
        self.bos_emb = nn.Parameter(torch.randn(latent_dim))
        self.input_linear = nn.Linear(latent_dim, d_model, bias=False)
        self.transformer = StreamingTransformer(
            d_model, num_heads, num_layers, dim_feedforward, max_period=max_period,
            attn_dim=attn_dim, num_kv_heads=num_kv_heads,
        )  # fmt: skip
        self.out_norm = nn.LayerNorm(d_model, eps=1e-5)
        self.z_proj = None if z_dim is None else nn.Linear(d_model, z_dim, bias=False)
        self.out_eos = nn.Linear(self.z_dim, 1)
        self.context_noise = (
            ContextNoise(d_model=d_model, **context_noise) if context_noise is not None else None
        )
        self.short_context = (
            ShortContextTransformer(latent_dim, d_model, **short_context)
            if short_context is not None
            else None
        )
        self.register_buffer("emb_mean", torch.zeros(latent_dim))
        self.register_buffer("emb_std", torch.ones(latent_dim))
        self.register_buffer("stats_updates", torch.zeros((), dtype=torch.long))
        self.reset_parameters()

    @property
    def vocab_size(self) -> int:
        return self.conditioner.vocab_size

    def reset_parameters(self) -> None:
        """Truncated-normal init with std ``1/sqrt(fan_in)`` (Kyutai's recipe); LayerNorms at 1/0."""

        def trunc_normal(weight: torch.Tensor, fan_in: int) -> None:
            std = fan_in**-0.5
            nn.init.trunc_normal_(weight, std=std, a=-3 * std, b=3 * std)

        for module in [self.transformer, self.input_linear, self.z_proj]:
            if module is None:  # no bottleneck
                continue
            for sub in module.modules():
                if isinstance(sub, nn.Linear):
                    trunc_normal(sub.weight, sub.in_features)
        text = self.conditioner
        if text.proj is None:
            trunc_normal(text.embed.weight, self.d_model)
        else:  # unit-norm rows, projected to entries of std 1/sqrt(d_model) as a full table's
            trunc_normal(text.embed.weight, text.embed.embedding_dim)
            trunc_normal(text.proj.weight, self.d_model)
        trunc_normal(self.speaker_proj_weight, self.speaker_proj_weight.shape[1])

    # -- normalisation ------------------------------------------------------------------------------
    def normalize(self, latents: torch.Tensor) -> torch.Tensor:
        return (latents - self.emb_mean) / self.emb_std

    def denormalize(self, latents: torch.Tensor) -> torch.Tensor:
        return latents * self.emb_std + self.emb_mean

    @torch.no_grad()
    def update_latent_statistics(self, latents: torch.Tensor, mask: torch.Tensor) -> None:
        """EMA of per-dimension mean/std over the valid frames of a batch (first steps of training)."""
        if int(self.stats_updates) >= self.stats_ema_steps or not bool(mask.any()):
            return
        frames = latents[mask].float()
        decay = self.stats_ema_decay if int(self.stats_updates) > 0 else 0.0
        self.emb_mean.lerp_(frames.mean(0), 1 - decay)
        self.emb_std.lerp_(frames.std(0).clamp_min(1e-5), 1 - decay)
        self.stats_updates += 1

    def set_latent_statistics(self, mean: torch.Tensor, std: torch.Tensor, freeze: bool = True) -> None:
        """Start from precomputed statistics (e.g. a latent cache's); ``freeze`` skips the EMA phase."""
        self.emb_mean.copy_(mean)
        self.emb_std.copy_(std.clamp_min(1e-5))
        if freeze:
            self.stats_updates.fill_(self.stats_ema_steps)

    # -- pieces of the sequence ---------------------------------------------------------------------
    def prefix(self, voice: torch.Tensor | None, tokens: torch.Tensor | None) -> torch.Tensor:
        """One row's conditioning prefix: voice ``[Fv, voice_dim]`` and tokens ``[L]`` -> ``[P, d_model]``."""
        parts = []
        if self.bos_before_voice is not None:
            parts.append(self.bos_before_voice[0])
        if voice is not None and voice.shape[0]:
            parts.append(F.linear(voice.to(self.speaker_proj_weight.dtype), self.speaker_proj_weight))
        if tokens is not None and tokens.shape[0]:
            parts.append(self.conditioner(tokens))
        if not parts:
            return self.bos_emb.new_zeros(0, self.d_model)
        return torch.cat(parts, dim=0)

    def audio_inputs(self, normalized: torch.Tensor) -> torch.Tensor:
        """Normalised latents ``[B, T, D]`` -> ``[B, T + 1, D]`` with the learned BOS latent first."""
        bos = self.bos_emb.to(normalized.dtype).expand(normalized.shape[0], 1, -1)
        return torch.cat([bos, normalized], dim=1)

    def output(self, hidden: torch.Tensor, short: torch.Tensor | None) -> torch.Tensor:
        """Backbone output ``[..., d_model]`` (and the short-context branch's) -> ``z`` ``[..., z_dim]``."""
        z = self.out_norm(hidden)
        if short is not None:
            z = z + short
        return z if self.z_proj is None else self.z_proj(z)

    # -- training: teacher forcing ------------------------------------------------------------------
    def forward(
        self,
        voice: torch.Tensor,
        voice_lengths: torch.Tensor,
        text: torch.Tensor,
        text_lengths: torch.Tensor,
        target: torch.Tensor,
        target_lengths: torch.Tensor,
        drop_voice: torch.Tensor | None = None,
        drop_text: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Teacher-forced pass over a padded batch.

        Args:
            voice: ``[B, Fv, voice_dim]`` raw (not normalised) codec latents of the prompts;
                ``voice_lengths [B]``.
            text: ``[B, L]`` token ids, ``text_lengths [B]``.
            target: ``[B, F, latent_dim]`` raw codec latents to predict, ``target_lengths [B]``.
            drop_voice, drop_text: ``[B]`` bool, rows whose voice / text is removed (CFG dropout).
        Returns:
            ``z`` ``[B, F + 1, z_dim]`` (position j predicts frame j; position F_i predicts EOS),
            ``eos_logits`` ``[B, F + 1]``, ``valid`` ``[B, F + 1]`` (j <= F_i), ``target_mask`` ``[B, F]``
            and ``normalized_target`` ``[B, F, latent_dim]``.
        """
        batch, frames = target.shape[:2]
        positions = torch.arange(frames + 1, device=target.device)
        target_mask = positions[None, :frames] < target_lengths[:, None]
        if self.training:
            self.update_latent_statistics(target, target_mask)
        normalized = self.normalize(target)
        clean_inputs = self.audio_inputs(normalized)
        noisy, levels = (
            self.context_noise(normalized) if self.context_noise is not None else (normalized, None)
        )
        audio_embeddings = self.input_linear(self.audio_inputs(noisy))
        if levels is not None:
            audio_embeddings = audio_embeddings + self.context_noise.level_features(F.pad(levels, (1, 0)))
        rows, starts = [], []
        for i in range(batch):
            voice_i = None if drop_voice is not None and drop_voice[i] else voice[i, : voice_lengths[i]]
            text_i = None if drop_text is not None and drop_text[i] else text[i, : text_lengths[i]]
            prefix = self.prefix(voice_i, text_i).to(audio_embeddings.dtype)
            starts.append(prefix.shape[0])
            rows.append(torch.cat([prefix, audio_embeddings[i, : target_lengths[i] + 1]], dim=0))
        # Right padding: causal attention keeps it out of every valid position.
        sequence = nn.utils.rnn.pad_sequence(rows, batch_first=True)
        hidden = self.transformer(sequence)
        index = (torch.tensor(starts, device=target.device)[:, None] + positions[None, :]).clamp_max(
            sequence.shape[1] - 1
        )
        hidden = hidden.gather(1, index[..., None].expand(-1, -1, hidden.shape[-1]))
        short = self.short_context(clean_inputs) if self.short_context is not None else None
        z = self.output(hidden, short)
        return {
            "z": z,
            "eos_logits": self.out_eos(z).squeeze(-1),
            "valid": positions[None, :] <= target_lengths[:, None],
            "target_mask": target_mask,
            "normalized_target": normalized,
        }

    def head_loss(self, out: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The head's training loss (and its terms) over the target frames of a ``forward`` output;
        the head draws its noise and times from the global RNG."""
        mask = out["target_mask"]
        return self.head.loss(out["z"][:, :-1][mask].float(), out["normalized_target"][mask].float())

    # -- generation ---------------------------------------------------------------------------------
    def prefill(self, voice: torch.Tensor | None, tokens: torch.Tensor | None) -> State:
        """A batch-1 stream state with the conditioning prefix already read (the "voice state")."""
        state = self.init_state(1)
        prefix = self.prefix(voice, tokens)
        if prefix.shape[0]:
            self.transformer(prefix[None], child_state(state, "transformer"))
        return state

    def prefill_batch(
        self, requests: Sequence[tuple[torch.Tensor | None, torch.Tensor | None]], with_null: bool = False
    ) -> State:
        """One stream state for several ``(voice [Fv, voice_dim], tokens [L])`` prefixes, left-padded.

        ``with_null`` appends one unconditioned row per request (rows ``B..2B-1``), what
        ``frames`` needs for classifier-free guidance: both passes then run as one batch.
        """
        prefixes = [self.prefix(voice, tokens) for voice, tokens in requests]
        if with_null:
            prefixes += [self.prefix(None, None)] * len(requests)
        longest = max(p.shape[0] for p in prefixes)
        padded = prefixes[0].new_zeros(len(prefixes), longest, self.d_model)
        valid = torch.zeros(len(prefixes), longest, dtype=torch.bool, device=padded.device)
        for row, prefix in enumerate(prefixes):
            padded[row, longest - prefix.shape[0] :] = prefix
            valid[row, longest - prefix.shape[0] :] = True
        state = self.init_state(len(prefixes))
        if longest:
            self.transformer(padded, child_state(state, "transformer"), valid)
        return state

    def step(self, previous: torch.Tensor, state: State) -> torch.Tensor:
        """One frame: the previous normalised latent ``[B, D]`` (``bos_emb`` for the first) ->
        ``z`` ``[B, z_dim]`` for the next frame."""
        x = previous[:, None]
        hidden = self.transformer(self.input_linear(x), child_state(state, "transformer"))
        short = (
            self.short_context(x, child_state(state, "short_context"))
            if self.short_context is not None
            else None
        )
        return self.output(hidden, short)[:, 0]

    def prefill_text(self, state: State, tokens: torch.Tensor) -> State:
        """Read ``tokens`` ``[L]`` after what ``state`` has already read (e.g. a voice state); in place."""
        if tokens.shape[0]:
            self.transformer(self.conditioner(tokens)[None], child_state(state, "transformer"))
        return state

    def frames(
        self,
        state: State,
        options: SamplingOptions,
        max_frames: int | Sequence[int],
        frames_after_eos: int | Sequence[int],
        generators: Sequence[torch.Generator | None] | torch.Generator | None = None,
    ) -> FrameSampler:
        """Autoregressive frames from a prefilled state (see ``FrameSampler``); ``max_frames`` and
        ``frames_after_eos`` are per stream (or one for all), resolved from ``options`` by the caller."""
        return FrameSampler(self, state, options, max_frames, frames_after_eos, generators)

    @torch.no_grad()
    def generate(
        self, voice: torch.Tensor | None, tokens: torch.Tensor, options: SamplingOptions
    ) -> torch.Tensor:
        """Speak ``tokens`` ``[L]`` in the voice ``[Fv, voice_dim]``: raw latents ``[F, latent_dim]``.

        ``options.max_frames`` must be set (the default budget needs the codec's frame rate); the
        noise is drawn from a generator on the model's device seeded with ``options.seed``.
        """
        if options.max_frames is None:
            raise ValueError("FlowLM.generate needs options.max_frames")
        state = (
            self.prefill_batch([(voice, tokens)], with_null=True)
            if options.guided
            else self.prefill(voice, tokens)
        )
        generator = torch.Generator(self.bos_emb.device).manual_seed(options.seed)
        sampler = self.frames(state, options, options.max_frames, options.frames_after(), generator)
        frames = [f.latents for f in sampler]
        return torch.cat(frames, dim=0) if frames else self.bos_emb.new_zeros(0, self.latent_dim)


# Pocket TTS ignores end of speech during the first frames of a stream.
MIN_FRAMES_BEFORE_EOS = 6


class Frame(NamedTuple):
    """One generation step of a batch: raw ``latents`` ``[B, latent_dim]``; ``emitting`` ``[B]`` is
    False for rows that have already stopped (their latents are meaningless)."""

    latents: torch.Tensor
    emitting: torch.Tensor


class FrameSampler:
    """Iterate the frames of ``B`` streams generated together from one prefilled state.

    The state holds ``B`` rows, or ``2B`` with classifier-free guidance (``options.cfg_scale != 1``;
    rows ``B..2B-1`` unconditioned, from ``FlowLM.prefill_batch(..., with_null=True)``), and the head
    reads ``z_null + cfg_scale · (z_cond − z_null)``. A row stops ``frames_after_eos`` frames after its
    EOS logit first exceeds ``options.eos_threshold`` (counting that frame; never before frame
    ``MIN_FRAMES_BEFORE_EOS``: Pocket TTS's rule) or after its ``max_frames``. Each row draws its
    noise from its own generator and only while it emits, so a row's frames do not depend on what
    it is batched with. After iteration, ``eos_steps[b]`` is the step where row ``b`` saw EOS
    (``None``: it ran to its ``max_frames``).
    """

    def __init__(
        self,
        model: FlowLM,
        state: State,
        options: SamplingOptions,
        max_frames: int | Sequence[int],
        frames_after_eos: int | Sequence[int],
        generators: Sequence[torch.Generator | None] | torch.Generator | None,
    ):
        rows = next(t for t in flatten_state(state).values() if t.dim() > 1).shape[0]
        if options.guided and rows % 2:
            raise ValueError("guidance needs unconditioned rows: prefill_batch(..., with_null=True)")
        self.batch = rows // 2 if options.guided else rows
        per_row = lambda value: list(value) if isinstance(value, Sequence) else [value] * self.batch  # noqa: E731
        self.max_frames, self.frames_after_eos = per_row(max_frames), per_row(frames_after_eos)
        self.generators = per_row(generators) if not isinstance(generators, torch.Generator) else [generators]
        if not len(self.max_frames) == len(self.frames_after_eos) == len(self.generators) == self.batch:
            raise ValueError(f"per-row options must have {self.batch} entries (one per stream)")
        self.model, self.state, self.options = model, state, options
        self.eos_steps: list[int | None] = [None] * self.batch

    @torch.no_grad()
    def __iter__(self) -> Iterator[Frame]:
        model, batch, options = self.model, self.batch, self.options
        previous = model.bos_emb[None].expand(2 * batch if options.guided else batch, -1)
        stopped = [False] * batch
        for step in range(max(self.max_frames)):
            z = model.step(previous, self.state)
            if options.guided:
                z = z[batch:] + options.cfg_scale * (z[:batch] - z[batch:])
            eos_logits = model.out_eos(z)[:, 0].tolist()
            for row in range(batch):
                if stopped[row]:
                    continue
                if (
                    self.eos_steps[row] is None
                    and step >= MIN_FRAMES_BEFORE_EOS
                    and eos_logits[row] > options.eos_threshold
                ):
                    self.eos_steps[row] = step
                eos_step = self.eos_steps[row]
                if step >= self.max_frames[row] or (
                    eos_step is not None and step >= eos_step + self.frames_after_eos[row]
                ):
                    stopped[row] = True
            if all(stopped):
                return
            noise = z.new_zeros(batch, model.latent_dim)
            for row in range(batch):
                if not stopped[row]:
                    noise[row] = sample_noise(
                        (model.latent_dim,), options.temperature, options.noise_clamp, self.generators[row],
                        device=z.device,
                    )[None]  # fmt: skip
            latents = model.head.sample(z, noise, options.head_steps)
            previous = torch.cat([latents, latents]) if options.guided else latents
            yield Frame(
                model.denormalize(latents), torch.tensor([not s for s in stopped], device=latents.device)
            )
