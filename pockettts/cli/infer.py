"""Speak text in a voice: ``pockettts-infer checkpoint=<model> text="..." voice=<wav|state> out=<wav>``
(or ``python infer.py ...`` in a clone)."""

import sys

import hydra
from omegaconf import DictConfig

from pockettts.cli import CONFIG_DIR
from pockettts.inference import run
from pockettts.schema import register_schemas

register_schemas()


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="infer")
def main(cfg: DictConfig) -> None:
    code = run(cfg)
    if code:
        sys.exit(code)


if __name__ == "__main__":
    main()
