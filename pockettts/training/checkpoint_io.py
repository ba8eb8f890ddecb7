"""Checkpoints written atomically wherever they go: a crash mid-write never leaves a truncated
``last.ckpt``.

Lightning's ``TorchCheckpointIO`` is atomic for remote paths (``s3://`` ...: one fsspec transaction)
but stages a local checkpoint in the system temp dir and ``shutil.move``s it into place; when that
dir is on another file system (node-local or tmpfs ``/tmp``, a shared checkpoint folder) the move is
a copy into the final name, and a crash during it truncates the checkpoint. Local paths are
therefore staged beside their final name instead (``pockettts.io.atomic_write``).
"""

from __future__ import annotations

from typing import Any

import fsspec
import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.types import _PATH

from pockettts.io import atomic_write


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local checkpoints are renamed into place on their own file system."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any = None) -> None:
        fs, local_path = fsspec.core.url_to_fs(str(path))
        if storage_options is not None or not isinstance(fs, LocalFileSystem):
            super().save_checkpoint(checkpoint, path, storage_options)  # remote, or its own error
            return
        atomic_write(local_path, lambda tmp: torch.save(checkpoint, tmp))
