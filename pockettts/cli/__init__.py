"""Command-line front-ends: the Hydra mains behind ``train.py``, ``distill.py``, ``eval.py`` and
``infer.py`` (also installed as ``pockettts-train`` etc.) and the corpus preparation commands."""

from pathlib import Path

# The packaged config tree (the clone's top-level ``configs`` links to it), as an absolute path so
# that a root shim, a console script and ``python -m`` all find it.
CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "configs")
