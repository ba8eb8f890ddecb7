"""The run loop shared by train.py and distill.py: instantiate every config node, then fit.

Everything a run needs is built from its config with ``_target_``; the resolved config is written
beside the run's outputs (``<output_dir>/config.yaml``) before anything else happens.

Batch bookkeeping: the data config states the *global* batch (one optimizer step over all devices
and accumulation steps); each device takes its share of it (``pockettts.data.batching``), so
``trainer.devices``, ``trainer.num_nodes`` and ``trainer.accumulate_grad_batches`` change the memory
per device, never the optimisation. The split is checked and logged before training starts.
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
    """Instantiate every ``_target_`` entry of a ``{name: {_target_: ...}}`` node; an entry set to
    null (``callbacks.<name>=null`` on the command line) is switched off."""
    if not node:
        return []
    objects = []
    for name, entry in node.items():
        if entry is None:
            log.info("%s.%s is switched off (null)", what, name)
            continue
        if not isinstance(entry, DictConfig) or "_target_" not in entry:
            raise ValueError(f"{what}.{name} must be a node with a _target_, got {entry!r}")
        log.info("instantiating %s.%s <%s>", what, name, entry._target_)
        objects.append(hydra.utils.instantiate(entry))
    return objects


def build_trainer(cfg: DictConfig, **overrides) -> L.Trainer:
    """The Lightning Trainer of ``cfg.trainer`` (with ``overrides``) and the run's callbacks and
    loggers attached."""
    callbacks = instantiate_dict(cfg.get("callbacks"), "callbacks")
    loggers = instantiate_dict(cfg.get("logger"), "logger")
    plugins = [hydra.utils.instantiate(p) for p in cfg.trainer.get("plugins") or []]
    if not any(isinstance(p, CheckpointIO) for p in plugins):
        plugins.append(AtomicCheckpointIO())
    return hydra.utils.instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=plugins, **overrides
    )


def take_accumulation(cfg: DictConfig, model: L.LightningModule) -> dict:
    """Hand ``trainer.accumulate_grad_batches`` to a module with manual optimisation (Lightning
    accumulates only automatic optimisation and refuses the setting otherwise); returns the
    Trainer overrides that go with it."""
    accumulate = int(cfg.trainer.get("accumulate_grad_batches") or 1)
    if accumulate < 1:
        raise ValueError(f"trainer.accumulate_grad_batches must be >= 1, got {accumulate}")
    if model.automatic_optimization:
        return {}
    if accumulate > 1 and not hasattr(model, "accumulate_grad_batches"):
        raise ValueError(
            f"{type(model).__name__} optimises manually and does not accumulate gradients: set "
            "trainer.accumulate_grad_batches=1 and lower the data's batch size instead"
        )
    if hasattr(model, "accumulate_grad_batches"):
        model.accumulate_grad_batches = accumulate
    return {"accumulate_grad_batches": 1}


def log_batch_split(trainer: L.Trainer, datamodule: L.LightningDataModule, accumulate: int) -> str:
    """Check that the data's global batch splits evenly over ``trainer.world_size`` devices and
    ``accumulate`` micro-batches, and log the split (the effective batch); returns the line."""
    describe = getattr(datamodule, "describe_batch", None)
    if describe is None:
        line = f"{trainer.world_size} device(s) x {accumulate} micro-batch(es) per optimizer step"
    else:
        line = describe(trainer.world_size, accumulate)
    if trainer.is_global_zero:
        log.info("effective batch per optimizer step: %s", line)
    return line


def log_resolved_config(trainer: L.Trainer, cfg: DictConfig) -> None:
    """Give every logger the resolved config as the run's hyperparameters (W&B's run config, the CSV
    logger's ``hparams.yaml``)."""
    hyperparameters = OmegaConf.to_container(cfg, resolve=True)
    for logger in trainer.loggers:
        logger.log_hyperparams(hyperparameters)


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
    trainer = build_trainer(cfg, **take_accumulation(cfg, model))
    log_resolved_config(trainer, cfg)
    log_batch_split(trainer, datamodule, int(cfg.trainer.get("accumulate_grad_batches") or 1))
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if cfg.get("run_test"):
        trainer.test(model, datamodule=datamodule, ckpt_path="last")
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
    return metrics
