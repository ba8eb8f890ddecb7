"""Speak text in a voice: ``python infer.py checkpoint=<model> text="..." voice=<wav|state> out=<wav>``."""

import sys

import hydra
from omegaconf import DictConfig

from pockettts.inference import run
from pockettts.schema import register_schemas

register_schemas()


@hydra.main(version_base="1.3", config_path="configs", config_name="infer")
def main(cfg: DictConfig) -> None:
    code = run(cfg)
    if code:
        sys.exit(code)


if __name__ == "__main__":
    main()
