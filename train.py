"""Train a stage (VAE or teacher): ``python train.py experiment=<name> [key=value ...]``."""

from pockettts.cli.train import main

if __name__ == "__main__":
    main()
