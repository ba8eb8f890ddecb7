"""The run loop shared by train.py and distill.py: instantiate every config node, then fit.

Everything a run needs is built from its config with ``_target_``; the resolved config is written
beside the run's outputs (``<output_dir>/config.yaml``) before anything else happens.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import lightning as L
from lightning.fabric.plugins import CheckpointIO
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from pockettts.training.checkpoint_io import AtomicCheckpointIO

log = logging.getLogger(__name__)


@rank_zero_only
def save_resolved_config(cfg: DictConfig, output_dir: str | Path) -> Path:
    """Write ``cfg`` with every interpolation resolved to ``<output_dir>/config.yaml``."""
    path = Path(output_dir) / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return path


def instantiate_dict(node: DictConfig | None, what: str) -> list:
    """Instantiate every ``_target_`` entry of a ``{name: {_target_: ...}}`` node."""
    if not node:
        return []
    objects = []
    for name, entry in node.items():
        if not isinstance(entry, DictConfig) or "_target_" not in entry:
            raise ValueError(f"{what}.{name} must be a node with a _target_, got {entry!r}")
        log.info("instantiating %s.%s <%s>", what, name, entry._target_)
        objects.append(hydra.utils.instantiate(entry))
    return objects


def build_trainer(cfg: DictConfig) -> L.Trainer:
    """The Lightning Trainer of ``cfg.trainer`` with the run's callbacks and loggers attached."""
    callbacks = instantiate_dict(cfg.get("callbacks"), "callbacks")
    loggers = instantiate_dict(cfg.get("logger"), "logger")
    plugins = [hydra.utils.instantiate(p) for p in cfg.trainer.get("plugins") or []]
    if not any(isinstance(p, CheckpointIO) for p in plugins):
        plugins.append(AtomicCheckpointIO())
    return hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=plugins)


def fit(cfg: DictConfig) -> dict[str, float]:
    """Train the model of ``cfg`` on its data; return the final logged metrics."""
    if cfg.get("model") is None:
        raise ValueError(
            "no model selected: choose an experiment preset (python train.py experiment=<name>, "
            "see configs/experiment/) or a model config (model=<name>)"
        )
    save_resolved_config(cfg, cfg.paths.output_dir)
    L.seed_everything(cfg.seed, workers=True)
    datamodule = hydra.utils.instantiate(cfg.data)
    model = hydra.utils.instantiate(cfg.model)
    trainer = build_trainer(cfg)
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if cfg.get("run_test"):
        trainer.test(model, datamodule=datamodule, ckpt_path="last")
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
    return metrics
