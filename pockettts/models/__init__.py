"""Models assembled from ``pockettts.modules``: the audio VAE, the backbone, the heads, generation."""
