"""One explicit-state protocol for every causal module.

A ``StreamingModule`` runs on a whole sequence when called with ``state=None`` and chunk by chunk when
given the state returned by ``init_state``; the state is updated in place, so the caller keeps one
object per stream. States are nested dicts that mirror the module tree (tensors for the module
itself, sub-dicts for its streaming children), which keeps them explicit, picklable and savable as
``.safetensors`` through ``flatten_state``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

State = dict[str, Any]


class StreamingModule(nn.Module):
    """Base class: ``forward(x, state=None)``; ``init_state`` builds the state of a fresh stream."""

    def init_own_state(self, batch_size: int, device: torch.device) -> State:
        """Tensors this module itself keeps between chunks (none by default)."""
        return {}

    def init_state(self, batch_size: int) -> State:
        """The state of a new stream for this module and all its streaming descendants."""
        # a module without weights follows torch's default device, as its inputs' factories do
        first = next(itertools.chain(self.parameters(), self.buffers()), None)
        device = first.device if first is not None else torch.get_default_device()
        state = self.init_own_state(batch_size, device)
        for name, child in streaming_children(self):
            state[name] = child.init_state(batch_size)
        return state


def streaming_children(module: nn.Module, prefix: str = "") -> Iterator[tuple[str, StreamingModule]]:
    """The nearest ``StreamingModule`` descendants, keyed by their dotted path (looks through lists)."""
    for name, child in module.named_children():
        path = f"{prefix}{name}"
        if isinstance(child, StreamingModule):
            yield path, child
        else:
            yield from streaming_children(child, prefix=f"{path}.")


def child_state(state: State | None, name: str) -> State | None:
    """The sub-state of child ``name`` (``None`` stays ``None``: a full-sequence pass)."""
    return None if state is None else state[name]


def flatten_state(state: State, prefix: str = "") -> dict[str, torch.Tensor]:
    """``{"a": {"b": t}}`` -> ``{"a.b": t}``, e.g. to save a voice state with safetensors."""
    flat: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if isinstance(value, dict):
            flat.update(flatten_state(value, prefix=f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def unflatten_state(flat: dict[str, torch.Tensor], template: State) -> State:
    """Inverse of ``flatten_state``, shaped like ``template`` (a fresh ``init_state``)."""

    def fill(node: State, prefix: str) -> State:
        out: State = {}
        for key, value in node.items():
            path = f"{prefix}{key}"
            if isinstance(value, dict):
                out[key] = fill(value, f"{path}.")
            elif path in flat:
                out[key] = flat[path]
            else:
                raise KeyError(f"streaming state entry {path!r} is missing")
        return out

    extra = set(flat) - set(flatten_state(template))
    if extra:
        raise KeyError(f"streaming state has unknown entries: {sorted(extra)[:5]}")
    return fill(template, "")


def copy_state(state: State) -> State:
    """An independent copy of a stream state (e.g. to speak several texts from one voice state)."""
    return {
        key: copy_state(value) if isinstance(value, dict) else value.clone() for key, value in state.items()
    }
