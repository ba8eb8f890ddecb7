"""How speech is sampled: one object handed whole from the command line (``sampling.*`` of
``eval.py`` / ``infer.py``) through ``TextToSpeech`` to the frame sampler (``FlowLM.frames``).

The defaults are Pocket TTS's inference defaults (``pocket_tts.default_parameters``: temperature
0.3, EOS threshold -4, no noise clamp, one head step, the frames-after-EOS guess below).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


# Not frozen: Hydra cannot override the fields of a frozen dataclass node (``sampling.temperature=0.5``).
@dataclass
class SamplingOptions:
    """Generation knobs.

    Attributes:
        cfg_scale: classifier-free guidance, the head reads ``z_null + cfg_scale · (z_cond − z_null)``;
            1 = one pass without guidance (students; teachers sound better at 1.5-2).
        temperature: variance of the head's noise (0: every frame is the head's noiseless sample).
        noise_clamp: the noise truncated to ``[-noise_clamp, noise_clamp]`` (``None``: not truncated).
        eos_threshold: a stream sees end of speech when its EOS logit exceeds this.
        frames_after_eos: frames still generated after EOS (counting the EOS frame); ``None``:
            Pocket TTS's guess, 5 after a text chunk of at most 4 words, else 3.
        max_tokens: longest text chunk; longer texts are split at sentences, then clauses.
        max_frames: frame budget of a text chunk; ``None``: 2 s more than 3 tokens per second.
        head_steps: the generation head's sampling steps (Pocket TTS's ``lsd_decode_steps``).
        seed: seeds the noise generator of a request.
    """

    cfg_scale: float = 1.0
    temperature: float = 0.3
    noise_clamp: float | None = None
    eos_threshold: float = -4.0
    frames_after_eos: int | None = None
    max_tokens: int = 50
    max_frames: int | None = None
    head_steps: int = 1
    seed: int = 0

    @property
    def guided(self) -> bool:
        """Whether sampling runs a conditioned and an unconditioned pass (``cfg_scale != 1``)."""
        return self.cfg_scale != 1.0

    def frames_after(self, words: int | None = None) -> int:
        """``frames_after_eos``, or the guess for a chunk of ``words`` words (3 when not known)."""
        if self.frames_after_eos is not None:
            return self.frames_after_eos
        return 5 if words is not None and words <= 4 else 3

    def frame_budget(self, tokens: int, frame_rate: float) -> int:
        """``max_frames``, or the budget of a chunk of ``tokens`` tokens at ``frame_rate`` frames/s."""
        if self.max_frames is not None:
            return self.max_frames
        return math.ceil((tokens / 3 + 2) * frame_rate)
