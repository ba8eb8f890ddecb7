"""Import and export of Kyutai Pocket TTS checkpoints (no dependency on the ``pocket-tts`` package)."""


class KyutaiLayoutError(ValueError):
    """A part of our model that Kyutai's layout cannot express; the message names it."""
