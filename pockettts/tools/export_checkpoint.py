"""Export the model of a run's Lightning checkpoint: a FlowLM (teacher, student) or a codec.

    pockettts-tools export-checkpoint RUN/checkpoints/step_0024000.ckpt
    # -> RUN/export/step_0024000/teacher.safetensors (student.safetensors, vae.safetensors; or --out PATH)

Exports as the end of training would have (``pockettts.training.export_checkpoint``): the EMA
weights; for a FlowLM the tokenizer copied beside the file, the codec and the step recorded in its
metadata. The module is rebuilt from the run's resolved ``config.yaml``.
"""

from __future__ import annotations

import argparse

from pockettts.training.export_checkpoint import export_checkpoint


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="RUN/checkpoints/<name>.ckpt")
    parser.add_argument(
        "--out", default=None, help="default: RUN/export/step_NNNNNNN/<teacher|student|vae>.safetensors"
    )
    parser.add_argument("--config", default=None, help="default: RUN/config.yaml")


def run(args: argparse.Namespace) -> int:
    print(export_checkpoint(args.checkpoint, args.out, args.config))
    return 0
