"""Evaluate a model on a test set: ``python eval.py checkpoint=<model> testset=<name or manifest>``;
sweeps: ``python eval.py -m +sweep=cfg_temperature checkpoint=<model>``."""

import sys

import hydra
from omegaconf import DictConfig

from pockettts.eval.runner import run
from pockettts.schema import register_schemas

register_schemas()


@hydra.main(version_base="1.3", config_path="configs", config_name="eval")
def main(cfg: DictConfig) -> None:
    code = run(cfg)
    if code:
        sys.exit(code)


if __name__ == "__main__":
    main()
