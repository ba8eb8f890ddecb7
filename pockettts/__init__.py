"""pockettts: CALM / Pocket TTS training and inference."""
