"""Training callbacks: audio samples and spectrograms, written to the run directory and the logger."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import WandbLogger

from pockettts.audio import save_audio
from pockettts.models.sampling import SamplingOptions

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


def write_samples(
    trainer: L.Trainer, folder: Path, clips: dict[str, dict[str, torch.Tensor]], sample_rate: int
) -> None:
    """Write ``{clip: {version: [T] audio}}`` as ``<clip>_<version>.wav`` plus one ``<clip>.png`` with a
    spectrogram per version, and send them to W&B through each attached ``WandbLogger``."""
    folder.mkdir(parents=True, exist_ok=True)
    media: dict[str, object] = {}
    for clip, versions in clips.items():
        for version, audio in versions.items():
            save_audio(folder / f"{clip}_{version}.wav", audio[None].float().cpu(), sample_rate)
        panels = {
            version: log_mel_image(audio.float().cpu(), sample_rate) for version, audio in versions.items()
        }
        save_spectrogram_png(folder / f"{clip}.png", panels)
        media[clip] = (versions, folder / f"{clip}.png")
    for logger in trainer.loggers:
        if not isinstance(logger, WandbLogger):
            continue
        for clip, (versions, png) in media.items():
            logger.log_image(f"spectrograms/{clip}", [str(png)], step=trainer.global_step)
            for version, audio in versions.items():
                logger.log_audio(
                    f"samples/{clip}_{version}",
                    [audio.float().cpu().numpy()],
                    step=trainer.global_step,
                    sample_rate=[sample_rate],
                )
    log.info("wrote %d sample clip(s) to %s", len(clips), folder)


class _EveryNSteps(L.Callback):
    """Calls ``write(trainer, pl_module, folder)`` every ``every_n_steps`` steps and at the end, on rank 0."""

    def __init__(self, dirpath: str, every_n_steps: int):
        self.dirpath = Path(dirpath)
        self.every_n_steps = every_n_steps
        self._last_step = -1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step > 0 and step % self.every_n_steps == 0 and step != self._last_step:
            self._run(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.global_step != self._last_step:
            self._run(trainer, pl_module)

    def _run(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_step = trainer.global_step
        if not trainer.is_global_zero or trainer.datamodule is None:
            return
        was_training = pl_module.training
        pl_module.eval()
        try:
            self.write(trainer, pl_module, self.dirpath / f"step_{trainer.global_step:07d}")
        finally:
            pl_module.train(was_training)

    def write(self, trainer: L.Trainer, pl_module: L.LightningModule, folder: Path) -> None:
        raise NotImplementedError


class AudioSamplesCallback(_EveryNSteps):
    """Reconstructions of a few fixed validation clips by the VAE being trained (``reconstruct``)."""

    def __init__(
        self, dirpath: str, every_n_steps: int = 1000, num_clips: int = 4, sample_rate: int = 24_000
    ):
        super().__init__(dirpath, every_n_steps)
        self.num_clips = num_clips
        self.sample_rate = sample_rate
        self._clips: torch.Tensor | None = None

    def write(self, trainer: L.Trainer, pl_module: L.LightningModule, folder: Path) -> None:
        if self._clips is None:
            self._clips = next(iter(trainer.datamodule.val_dataloader()))["audio"][: self.num_clips]
        rebuilt = pl_module.reconstruct(self._clips.to(pl_module.device))
        clips = {
            f"clip{i}": {"original": original[0], "reconstruction": again[0]}
            for i, (original, again) in enumerate(zip(self._clips, rebuilt))
        }
        write_samples(trainer, folder, clips, self.sample_rate)


class SpeechSamplesCallback(_EveryNSteps):
    """Speech generated by the backbone being trained (EMA weights) for fixed validation examples
    (their voice prompt and text), decoded by the frozen VAE, next to the VAE's decoding of the
    real target latents. Example ``i`` is sampled with ``sampling`` (default ``SamplingOptions()``)
    at seed ``sampling.seed + i``, for at most ``max_seconds``."""

    def __init__(
        self,
        dirpath: str,
        every_n_steps: int = 1000,
        num_examples: int = 2,
        sampling: SamplingOptions | None = None,
        max_seconds: float = 15.0,
    ):
        super().__init__(dirpath, every_n_steps)
        self.num_examples = num_examples
        self.sampling = sampling or SamplingOptions()
        self.max_seconds = max_seconds
        self._vae = None

    @torch.no_grad()
    def write(self, trainer: L.Trainer, pl_module: L.LightningModule, folder: Path) -> None:
        from pockettts.models.vae import load_vae

        datamodule = trainer.datamodule
        if self._vae is None:
            self._vae = load_vae(datamodule.vae)
        datamodule.setup()
        dataset = datamodule.valid_set
        clips = {}
        with pl_module.exported_weights() as model:
            max_frames = int(self.max_seconds * self._vae.frame_rate)
            for index in range(min(self.num_examples, len(dataset))):
                example = dataset[index]
                options = dataclasses.replace(
                    self.sampling, max_frames=max_frames, seed=self.sampling.seed + index
                )
                generated = model.generate(
                    example["voice"].to(pl_module.device), example["tokens"].to(pl_module.device), options
                ).cpu()
                clips[f"example{index}"] = {
                    "generated": self._vae.decode(generated[None])[0, 0],
                    "reference": self._vae.decode(example["target"][None])[0, 0],
                }
                (folder / f"example{index}.txt").parent.mkdir(parents=True, exist_ok=True)
                (folder / f"example{index}.txt").write_text(example["text"] + "\n")
        write_samples(trainer, folder, clips, self._vae.sample_rate)
