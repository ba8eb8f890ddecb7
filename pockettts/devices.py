"""Where models run: the one translation of what a user writes (``auto``, ``cpu``, ``cuda``, ``cuda:N``)
into a ``torch.device``.

Every function and command that takes a ``device`` passes it through ``resolve_device``, so all of
them accept the same values and fail with the same message. ``auto`` is the first GPU when CUDA is
usable, else the CPU; the CPU is the default everywhere.

Seeded sampling draws its noise from a generator on the model's device; CUDA and CPU generators
produce different streams, so a seed reproduces the same audio on the same device type only.
"""

from __future__ import annotations

import re

import torch

DEVICE_CHOICES = "auto | cpu | cuda | cuda:N"
_CUDA = re.compile(r"cuda(?::(\d+))?")


class DeviceError(ValueError):
    """A device that is misspelt or not present on this machine; the message names it."""


def resolve_device(device: str | torch.device = "cpu") -> torch.device:
    """``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a ``torch.device`` -> a usable ``torch.device``.

    Raises ``DeviceError`` (a ``ValueError``) for anything else, and for a CUDA device this machine
    does not have.
    """
    name = str(device).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    match = _CUDA.fullmatch(name)
    if match is None:
        raise DeviceError(f"unknown device {str(device)!r}; choose one of {DEVICE_CHOICES}")
    if not torch.cuda.is_available():
        raise DeviceError(
            f"device {name!r} needs CUDA, which this machine does not offer (torch {torch.__version__}, "
            f"built for CUDA {torch.version.cuda or 'none'}, sees no GPU); use device=cpu or device=auto"
        )
    index = match.group(1)
    if index is not None and int(index) >= torch.cuda.device_count():
        raise DeviceError(
            f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s), numbered from 0"
        )
    return torch.device(name)


def describe_device(device: torch.device) -> str:
    """A device as results should record it: ``cpu``, or ``cuda:0 (NVIDIA H100 80GB HBM3)``."""
    if device.type != "cuda":
        return str(device)
    index = device.index if device.index is not None else torch.cuda.current_device()
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"


def synchronize(device: torch.device) -> None:
    """Wait until ``device`` has run everything queued on it (CUDA runs asynchronously), so a wall
    clock read afterwards times the work itself; nothing to wait for on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
