"""Exponential moving average of a module's weights (the weights a stage exports)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


class EMA:
    """A float32 shadow of ``module``'s trainable parameters, ``shadow = d * shadow + (1 - d) * param``.

    The decay warms up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so early weights
    are not averaged with the random init for thousands of steps.
    """

    def __init__(self, module: nn.Module, decay: float = 0.999):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.shadow = {
            name: param.detach().float().clone()
            for name, param in module.named_parameters()
            if param.requires_grad
        }

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for name, param in module.named_parameters():
            if name in self.shadow:
                self.shadow[name].lerp_(param.detach().float(), 1.0 - decay)
        self.updates += 1

    @contextmanager
    @torch.no_grad()
    def averaged(self, module: nn.Module) -> Iterator[nn.Module]:
        """Temporarily load the averaged weights into ``module`` (e.g. to validate or export)."""
        params = dict(module.named_parameters())
        backup = {name: params[name].detach().clone() for name in self.shadow}
        for name, value in self.shadow.items():
            params[name].copy_(value)
        try:
            yield module
        finally:
            for name, value in backup.items():
                params[name].copy_(value)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        missing = set(self.shadow) - set(state["shadow"])
        if missing:
            raise KeyError(f"EMA state lacks {sorted(missing)[:5]}")
        self.decay, self.updates = state["decay"], state["updates"]
        for name, value in state["shadow"].items():
            if name in self.shadow:
                self.shadow[name] = value.to(self.shadow[name].device, torch.float32)

    def to(self, device: torch.device) -> EMA:
        self.shadow = {name: value.to(device) for name, value in self.shadow.items()}
        return self


class EMAWeightsMixin:
    """For LightningModules with ``self.ema`` (an ``EMA`` or ``None``) over ``self.<ema_module_name>``:
    validation and export see the averaged weights."""

    ema_module_name = "model"

    @contextmanager
    def exported_weights(self) -> Iterator[nn.Module]:
        """The weights that get exported (EMA when enabled) loaded into the module for the block."""
        module = getattr(self, self.ema_module_name)
        if self.ema is None:
            yield module
        else:
            with self.ema.averaged(module) as averaged:
                yield averaged

    def on_validation_epoch_start(self) -> None:
        self._validation_weights = self.exported_weights()
        self._validation_weights.__enter__()

    def on_validation_epoch_end(self) -> None:
        self._validation_weights.__exit__(None, None, None)
