"""Import and export of Kyutai Pocket TTS checkpoints (no dependency on the ``pocket-tts`` package)."""
