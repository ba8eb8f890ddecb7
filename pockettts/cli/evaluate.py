"""Evaluate a model on a test set: ``pockettts-eval checkpoint=<model> testset=<name or manifest>``
(or ``python eval.py ...`` in a clone); sweeps: ``pockettts-eval -m +sweep=cfg_temperature ...``.
Needs the eval extra (``pip install 'pockettts[eval]'``)."""

import sys

import hydra
from omegaconf import DictConfig

from pockettts.cli import CONFIG_DIR
from pockettts.eval.runner import run
from pockettts.extras import INSTALL_HINT, missing_eval_packages
from pockettts.schema import register_schemas

register_schemas()


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def main(cfg: DictConfig) -> None:
    missing = missing_eval_packages()
    if missing:  # fail before the model loads, not at the first item
        sys.exit(f"eval.py needs the eval extra ({', '.join(missing)} not installed): {INSTALL_HINT}")
    code = run(cfg)
    if code:
        sys.exit(code)


if __name__ == "__main__":
    main()
