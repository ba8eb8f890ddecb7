"""Training losses: spectral reconstruction, adversarial + feature matching, KL, and SSL distillation.

Each module has one job and imports only torch/torchaudio; import from the submodules directly, e.g.
``from pockettts.losses.adversarial import discriminator_loss``.
"""
