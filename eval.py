"""Evaluate a model on a test set: ``python eval.py checkpoint=<model> testset=<name or manifest>``;
sweeps: ``python eval.py -m +sweep=cfg_temperature checkpoint=<model>``. Needs ``pip install -e .[eval]``."""

from pockettts.cli.evaluate import main

if __name__ == "__main__":
    main()
