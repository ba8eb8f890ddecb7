"""Distil a student from an exported teacher: ``pockettts-distill experiment=<name> teacher=<path>``
(or ``python distill.py ...`` in a clone)."""

import hydra
from omegaconf import DictConfig

from pockettts.cli import CONFIG_DIR
from pockettts.schema import register_schemas
from pockettts.training.run import fit

register_schemas()


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="distill")
def main(cfg: DictConfig) -> None:
    fit(cfg)


if __name__ == "__main__":
    main()
