"""pockettts: CALM / Pocket TTS training and inference.

``from pockettts import TextToSpeech`` is the speaking API (``pockettts.models.tts``). It is loaded
on first access, so ``import pockettts`` stays light (no torch until a model is needed).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pockettts.models.tts import TextToSpeech

# public name -> module that defines it
_LAZY = {"TextToSpeech": "pockettts.models.tts"}

__all__ = ["TextToSpeech"]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'pockettts' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
