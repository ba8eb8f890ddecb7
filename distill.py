"""Distil a student from an exported teacher: ``python distill.py experiment=<name> teacher=<path>``."""

import hydra
from omegaconf import DictConfig

from pockettts.schema import register_schemas
from pockettts.training.run import fit

register_schemas()


@hydra.main(version_base="1.3", config_path="configs", config_name="distill")
def main(cfg: DictConfig) -> None:
    fit(cfg)


if __name__ == "__main__":
    main()
