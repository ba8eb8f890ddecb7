"""Training callbacks: audio samples and spectrograms, written to the run directory and the logger."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import WandbLogger

from pockettts.audio import save_audio

log = logging.getLogger(__name__)


def log_mel_image(audio: torch.Tensor, sample_rate: int) -> np.ndarray:
    """``[T]`` waveform -> ``[80, frames]`` log-mel (dB) array for plotting."""
    import torchaudio

    mel = torchaudio.transforms.MelSpectrogram(sample_rate, n_fft=1024, hop_length=256, n_mels=80)(
        audio.float()
    )
    return (10 * torch.log10(mel.clamp_min(1e-8))).numpy()


def save_spectrogram_png(path: Path, panels: dict[str, np.ndarray]) -> None:
    """One row per named spectrogram, stacked vertically, saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 2.2 * len(panels)), squeeze=False)
    for axis, (title, image) in zip(axes[:, 0], panels.items()):
        axis.imshow(
            image, origin="lower", aspect="auto", cmap="magma", vmin=image.max() - 80, vmax=image.max()
        )
        axis.set_title(title, fontsize=9)
        axis.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


class AudioSamplesCallback(L.Callback):
    """Every ``every_n_steps`` generator steps (and at the end), reconstruct a few fixed validation
    clips with the module's ``reconstruct`` and write wav + spectrogram PNGs under
    ``<dirpath>/step_XXXXXXX/``; also sent to wandb when a ``WandbLogger`` is attached."""

    def __init__(
        self, dirpath: str, every_n_steps: int = 1000, num_clips: int = 4, sample_rate: int = 24_000
    ):
        self.dirpath = Path(dirpath)
        self.every_n_steps = every_n_steps
        self.num_clips = num_clips
        self.sample_rate = sample_rate
        self._clips: torch.Tensor | None = None
        self._last_step = -1

    def _fixed_clips(self, trainer: L.Trainer) -> torch.Tensor | None:
        if self._clips is None:
            datamodule = trainer.datamodule
            if datamodule is None:
                return None
            batch = next(iter(datamodule.val_dataloader()))
            self._clips = batch["audio"][: self.num_clips]
        return self._clips

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step > 0 and step % self.every_n_steps == 0 and step != self._last_step:
            self.write_samples(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.global_step != self._last_step:
            self.write_samples(trainer, pl_module)

    def write_samples(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_step = trainer.global_step
        if not trainer.is_global_zero:
            return
        clips = self._fixed_clips(trainer)
        if clips is None:
            return
        was_training = pl_module.training
        pl_module.eval()
        reconstructions = pl_module.reconstruct(clips.to(pl_module.device)).float().cpu()
        pl_module.train(was_training)
        folder = self.dirpath / f"step_{trainer.global_step:07d}"
        folder.mkdir(parents=True, exist_ok=True)
        media: dict[str, object] = {}
        for index, (original, rebuilt) in enumerate(zip(clips, reconstructions)):
            save_audio(folder / f"clip{index}_original.wav", original, self.sample_rate)
            save_audio(folder / f"clip{index}_reconstruction.wav", rebuilt, self.sample_rate)
            panels = {
                "original": log_mel_image(original[0], self.sample_rate),
                "reconstruction": log_mel_image(rebuilt[0], self.sample_rate),
            }
            save_spectrogram_png(folder / f"clip{index}.png", panels)
            media[f"clip{index}"] = (rebuilt[0].numpy(), folder / f"clip{index}.png")
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                import wandb

                logger.experiment.log(
                    {
                        **{
                            f"samples/{k}": wandb.Audio(a, sample_rate=self.sample_rate)
                            for k, (a, _) in media.items()
                        },
                        **{f"spectrograms/{k}": wandb.Image(str(p)) for k, (_, p) in media.items()},
                    },
                    step=trainer.global_step,
                )
        log.info("wrote %d reconstructions to %s", len(media), folder)
