"""The evaluation extra: packages that scoring needs and training and inference do not.

``pip install pockettts`` (``pip install -e .`` in a clone) trains and speaks; ``pockettts[eval]``
adds the recognisers, speaker encoder and quality predictors behind ``eval.py``. Library code
imports them on first use through :func:`import_eval_module`, so ``import pockettts`` and
inference work without them and a missing one is reported with the command that installs it.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

# import name -> distribution of the eval extra that provides it
EVAL_MODULES = {
    "whisper": "openai-whisper",
    "jiwer": "jiwer",
    "resemblyzer": "resemblyzer",
    "speechmos": "speechmos",
    "distillmos": "distillmos",
    "onnxruntime": "onnxruntime",
    "librosa": "librosa",
    "transformers": "transformers",
}

INSTALL_HINT = "pip install 'pockettts[eval]' (in a clone: pip install -e '.[eval]')"


def import_eval_module(name: str) -> ModuleType:
    """``importlib.import_module(name)`` for a module of the eval extra (``"resemblyzer"``,
    ``"whisper.normalizers"``, ...), or a ModuleNotFoundError that says how to install it."""
    top = name.partition(".")[0]
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name != top:  # installed, but one of its own imports is broken: show that
            raise
        raise ModuleNotFoundError(
            f"{EVAL_MODULES.get(top, top)} is not installed; it comes with the eval extra: {INSTALL_HINT}",
            name=top,
        ) from None


def missing_eval_packages() -> list[str]:
    """The distributions of the eval extra whose modules cannot be found (none after a full install)."""
    return [dist for module, dist in EVAL_MODULES.items() if importlib.util.find_spec(module) is None]
