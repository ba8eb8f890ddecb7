"""The exported model: the one reader and writer of a trained FlowLM's files.

An export is ``<name>.safetensors`` (the weights; the header's metadata holds the FlowLM's config
and what it needs to speak) with, beside it, ``<name>.json`` (the same metadata, for people) and
the tokenizer file. Metadata keys, all strings:

    format       "pockettts.flow_lm"
    config       JSON of ``FlowLM``'s arguments: the file rebuilds its own model
    tokenizer    the tokenizer's file name, beside the export
    vae          the codec the model was trained with, as a path at export time
    latent_hash  that codec's ``latent_space_hash`` (its encoder side): any codec with it decodes
    step, ema    the training step, and whether the weights are the EMA ones ("true"/"false")

Only ``format`` and ``config`` are required (converted released models have no training step).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from pockettts.devices import resolve_device
from pockettts.io import atomic_write, atomic_write_text
from pockettts.models.flow_lm import FlowLM
from pockettts.models.vae import vae_latent_hash

FORMAT = "pockettts.flow_lm"
TOKENIZER_NAMES = ("tokenizer.model", "tokenizer.json")  # looked for beside exports that name none


@dataclass(frozen=True)
class ExportedModel:
    """An export read from disk: its ``path``, the rebuilt ``flow_lm`` (eval mode) and the
    ``metadata`` of its header (see the module docstring)."""

    path: Path
    flow_lm: FlowLM
    metadata: dict[str, str]

    @property
    def step(self) -> int | None:
        return int(self.metadata["step"]) if "step" in self.metadata else None

    @property
    def ema(self) -> bool | None:
        return self.metadata["ema"].lower() == "true" if "ema" in self.metadata else None

    @property
    def tokenizer(self) -> Path:
        """The tokenizer beside the export: the recorded name, else the first of ``TOKENIZER_NAMES``
        that exists."""
        folder = self.path.parent
        default = next((n for n in TOKENIZER_NAMES if (folder / n).is_file()), TOKENIZER_NAMES[0])
        return folder / self.metadata.get("tokenizer", default)

    def codec(self, vae: str | Path | None = None) -> Path:
        """The codec to decode the model's latents with.

        ``vae`` when given, which must encode the latent space the model was trained on (another
        decoder is fine, another encoder is not). Else the recorded one: its path at export time
        (relative to the working directory then) or, when that is gone or holds another codec (a
        copied or shipped export), the file of that name beside the export; either must have the
        recorded latent hash.
        """
        wanted = self.metadata.get("latent_hash")
        if vae is not None:
            found = vae_latent_hash(vae)
            if wanted and found != wanted:
                raise ValueError(
                    f"the VAE {vae} encodes another latent space (latent hash {found[:12]}) than "
                    f"{self.path} was trained on ({wanted[:12]}): pass a codec with that encoder"
                )
            return Path(vae)
        if "vae" not in self.metadata:
            raise ValueError(f"{self.path} records no VAE: pass one")
        recorded = Path(self.metadata["vae"])
        candidates = [c for c in (recorded, self.path.parent / recorded.name) if c.is_file()]
        if not candidates:
            raise FileNotFoundError(
                f"{self.path} was trained with the VAE {recorded}, which exists neither there nor beside it"
            )
        for candidate in candidates:
            if not wanted or vae_latent_hash(candidate) == wanted:
                return candidate
        raise ValueError(
            f"{' and '.join(map(str, candidates))} hold another VAE than the one {self.path} was trained "
            f"with ({recorded}, latent hash {wanted[:12]})"
        )


def read_export(path: str | Path, device: str | torch.device = "cpu") -> ExportedModel:
    """Read an export in one pass over the file (header and weights together); the model is put
    on ``device`` (``pockettts.devices.resolve_device``)."""
    device = resolve_device(device)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"FlowLM checkpoint {path} does not exist")
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
        if metadata.get("format") != FORMAT or "config" not in metadata:
            raise ValueError(f"{path} is not an exported pockettts FlowLM (no config in its metadata)")
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    model = FlowLM(**json.loads(metadata["config"]))
    model.load_state_dict(tensors)
    return ExportedModel(path, model.to(device).eval(), metadata)


def write_export(
    model: FlowLM,
    path: str | Path,
    tokenizer: str | Path | None = None,
    vae: str | Path | None = None,
    step: int | None = None,
    ema: bool | None = None,
) -> Path:
    """Write ``model`` as an export at ``path`` (atomically) and ``<path>.json`` beside it.

    ``tokenizer``: its file is copied beside the export (under its own name) and recorded.
    ``vae``: the codec the model was trained with, recorded by path and latent hash.
    ``step``, ``ema``: recorded when given (results directories of ``eval.py`` are named after them).
    """
    path = Path(path)
    metadata = {"format": FORMAT, "config": json.dumps(model.config)}
    if tokenizer is not None:
        tokenizer = Path(tokenizer)
        beside = path.parent / tokenizer.name
        if not beside.exists() or not beside.samefile(tokenizer):
            atomic_write(beside, lambda tmp: shutil.copyfile(tokenizer, tmp))
        metadata["tokenizer"] = tokenizer.name
    if vae is not None:
        metadata |= {"vae": str(vae), "latent_hash": vae_latent_hash(vae)}
    if step is not None:
        metadata["step"] = str(step)
    if ema is not None:
        metadata["ema"] = str(ema).lower()
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    readable = {**metadata, "config": model.config}
    atomic_write_text(path.with_suffix(".json"), json.dumps(readable, indent=2) + "\n")
    return path
