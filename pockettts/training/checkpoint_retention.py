"""Checkpoint retention: keep the last K step checkpoints and every N-th, delete the rest, and say at
the start of a run how much disk that will take.

Lightning's ``ModelCheckpoint(save_top_k=-1)`` keeps every checkpoint: a 400k-step teacher saving
every 5000 steps fills 80 x ~5 GB. ``RetainingModelCheckpoint`` saves as often, keeps what a resume
or a later comparison needs, and remembers which of its files are on disk in its own checkpointed
state, so a resumed run goes on pruning the files of the run it continues.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

log = logging.getLogger(__name__)

ADAM_MOMENTS = 2  # every stage optimises with AdamW: two moments per trainable parameter


def retained_steps(steps: Iterable[int], keep_last: int | None, keep_every_n_steps: int | None) -> set[int]:
    """The steps among ``steps`` whose checkpoints stay: the last ``keep_last`` (every one when
    ``None``) and every multiple of ``keep_every_n_steps`` (none when ``None``)."""
    ordered = sorted(steps)
    kept = set(ordered if keep_last is None else ordered[max(len(ordered) - keep_last, 0) :])
    if keep_every_n_steps:
        kept |= {step for step in ordered if step % keep_every_n_steps == 0}
    return kept


def tensor_bytes(tree: Any) -> int:
    """Bytes of every tensor in a nested dict/list/tuple."""
    if isinstance(tree, torch.Tensor):
        return tree.numel() * tree.element_size()
    if isinstance(tree, dict):
        return sum(tensor_bytes(value) for value in tree.values())
    if isinstance(tree, list | tuple):
        return sum(tensor_bytes(value) for value in tree)
    return 0


def estimate_checkpoint_bytes(trainer: L.Trainer, module: L.LightningModule) -> int:
    """A checkpoint's size from what it will hold: the module's state dict, what the module adds to a
    checkpoint (``on_save_checkpoint``: EMA weights, guard counters) and the optimizer states; an
    optimizer that has not stepped yet is counted as Adam's two moments per parameter it holds."""
    extra: dict[str, Any] = {}
    module.on_save_checkpoint(extra)
    total = tensor_bytes(module.state_dict()) + tensor_bytes(extra)
    for optimizer in trainer.optimizers:
        if optimizer.state:
            total += tensor_bytes(optimizer.state_dict()["state"])
        else:
            params = [p for group in optimizer.param_groups for p in group["params"]]
            total += ADAM_MOMENTS * tensor_bytes(params)
    return total


class RetainingModelCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` (every argument of it, ``save_top_k=-1`` without a ``monitor``) that keeps
    the last ``keep_last`` step checkpoints and those at multiples of ``keep_every_n_steps`` and
    deletes the others (``None``: no limit of that kind). ``last.ckpt`` is never deleted, nor the
    checkpoint a run resumed from while that run lasts. At the start of training it logs the
    projected disk use over ``trainer.max_steps``, from ``estimate_checkpoint_bytes``."""

    def __init__(self, *args, keep_last: int | None = None, keep_every_n_steps: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if self.monitor is not None or self.save_top_k != -1:
            raise ValueError("keep_last/keep_every_n_steps select by step: use save_top_k=-1 and no monitor")
        if keep_last is not None and keep_last < 1:
            raise ValueError(f"keep_last must be >= 1 (or null: keep all), got {keep_last}")
        self.keep_last = keep_last
        self.keep_every_n_steps = keep_every_n_steps
        self.on_disk: dict[int, str] = {}  # step -> its checkpoint file, for every one not deleted

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        if trainer.is_global_zero:
            log.info(self.projection(trainer.max_steps, estimate_checkpoint_bytes(trainer, pl_module)))

    def projection(self, max_steps: int, checkpoint_bytes: int) -> str:
        """How many checkpoints a run of ``max_steps`` keeps and the disk they take."""
        every = self._every_n_train_steps
        if not every or max_steps <= 0:
            return "checkpoint disk use not projected: it needs every_n_train_steps and trainer.max_steps"
        last_copy = self.save_last is True  # save_last="link" links last.ckpt to a kept file
        kept = retained_steps(range(every, max_steps + 1, every), self.keep_last, self.keep_every_n_steps)
        files = len(kept) + last_copy
        return (
            f"checkpoints: {files} kept over {max_steps} steps (of {max_steps // every} saved every {every} "
            f"steps; keep_last={self.keep_last}, keep_every_n_steps={self.keep_every_n_steps}"
            f"{', plus last.ckpt' if last_copy else ''}) x {checkpoint_bytes / 1e9:.3g} GB each "
            f"(estimated from weights, EMA and optimizer state) = {files * checkpoint_bytes / 1e9:.3g} GB"
        )

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        # Recorded before saving, so the checkpoint's own state lists its file.
        if filepath != self.last_model_path:
            self.on_disk[trainer.global_step] = filepath
        super()._save_checkpoint(trainer, filepath)
        keep = retained_steps(self.on_disk, self.keep_last, self.keep_every_n_steps)
        for step in sorted(self.on_disk.keys() - keep):
            path = self.on_disk[step]
            if not self._should_remove_checkpoint(trainer, path, filepath):
                continue  # the checkpoint this run resumed from: deleted by a later run
            if self._fs.exists(path):
                self._remove_checkpoint(trainer, path)
            del self.on_disk[step]

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "on_disk": dict(self.on_disk)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        if state_dict.get("dirpath", self.dirpath) == self.dirpath:
            self.on_disk = dict(state_dict.get("on_disk", {}))
