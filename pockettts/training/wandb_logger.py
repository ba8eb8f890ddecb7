"""Weights & Biases logging that continues one W&B run across resumes and requeues.

A resumed run (``ckpt_path=RUN/checkpoints/last.ckpt`` into the same run directory, or a SLURM
requeue) would otherwise open a new W&B run, splitting one training's curves in two. The run id is
kept in the run directory instead: written when the run first starts, read back when it resumes.

The mode is W&B's own: ``WANDB_MODE`` (``online``, ``offline``: sync later with
``wandb sync RUN/wandb/offline-run-*``, or ``disabled``) works as W&B documents it.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from pockettts.io import atomic_write_text

RUN_ID_FILE = "wandb_run_id"


def run_id(run_dir: Path) -> str:
    """The W&B run id kept in ``run_dir/wandb_run_id``; a new one is written there by rank 0 when
    the run starts for the first time (other ranks never open the W&B run)."""
    path = run_dir / RUN_ID_FILE
    if path.is_file():
        return path.read_text().strip()
    new_id = uuid.uuid4().hex[:8]
    if rank_zero_only.rank == 0:
        atomic_write_text(path, new_id + "\n")
    return new_id


def experiment_name() -> str | None:
    """The experiment preset (``experiment=<name>``) the running Hydra job was composed with."""
    return HydraConfig.get().runtime.choices.get("experiment") if HydraConfig.initialized() else None


class ResumableWandbLogger(WandbLogger):
    """``WandbLogger`` writing under ``save_dir`` (the run directory), with the run id kept there
    (``run_id``) and the run named after the experiment preset unless ``name`` is given."""

    def __init__(self, save_dir: str, name: str | None = None, **kwargs):
        super().__init__(
            save_dir=save_dir, name=name or experiment_name(), id=run_id(Path(save_dir)), **kwargs
        )
