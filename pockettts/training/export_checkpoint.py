"""Export the model of any Lightning checkpoint of its run: a FlowLM (teacher or student) or a codec.

Training exports only at its end; to evaluate a run mid-way (``pockettts-tools codec``,
``text-gain``, ``alignment``, ``resynthesis``, ``eval.py``, ``infer.py``), export one of its
``checkpoints/*.ckpt`` the way the end of training would have: the EMA weights; for a FlowLM the
tokenizer copied beside the file, the codec and the step recorded in its metadata. The module
(and for a FlowLM the data) is rebuilt from the run's resolved ``config.yaml``. Command line:
``pockettts-tools export-checkpoint``.
"""

from __future__ import annotations

from pathlib import Path

import hydra
import torch
from omegaconf import OmegaConf

from pockettts.models.flow_lm import FlowLM
from pockettts.models.vae import AudioVAE
from pockettts.training.teacher_module import export_flow_lm


def default_export_path(checkpoint: Path, step: int, name: str) -> Path:
    """``RUN/export/step_NNNNNNN/<name>.safetensors`` for ``RUN/checkpoints/<file>.ckpt``."""
    return checkpoint.parent.parent / "export" / f"step_{step:07d}" / f"{name}.safetensors"


def export_checkpoint(
    checkpoint: str | Path, out: str | Path | None = None, config: str | Path | None = None
) -> Path:
    """Rebuild the run's module from ``config`` (default ``RUN/config.yaml``), load ``checkpoint``
    (weights, EMA) and export its FlowLM or codec; returns the written path."""
    checkpoint = Path(checkpoint)
    config = Path(config) if config is not None else checkpoint.parent.parent / "config.yaml"
    for path, what in ((checkpoint, "checkpoint"), (config, "run config")):
        if not path.is_file():
            raise FileNotFoundError(f"{what} not found: {path}")
    cfg = OmegaConf.load(config)
    module = hydra.utils.instantiate(cfg.model)
    # Both kinds of module keep EMA weights: what they are of decides the export.
    trained = getattr(module, getattr(module, "ema_module_name", ""), None)
    if not isinstance(trained, FlowLM | AudioVAE):
        raise ValueError(f"{config}: {type(module).__name__} trains neither a FlowLM nor a codec")
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    module.on_load_checkpoint(state)  # the EMA weights (and any state-dict migration), as Lightning:
    module.load_state_dict(state["state_dict"])  # the hook runs before the weights load
    step = int(state["global_step"])
    default_name = "flow_lm" if isinstance(trained, FlowLM) else "vae"
    name = Path(module.export_path).stem if getattr(module, "export_path", None) else default_name
    out = Path(out) if out is not None else default_export_path(checkpoint, step, name)
    if isinstance(trained, AudioVAE):
        return module.export(out)
    datamodule = hydra.utils.instantiate(cfg.data)  # the tokenizer and codec the export records
    with module.exported_weights() as model:
        return export_flow_lm(model, out, datamodule, step=step, ema=module.ema is not None)
