"""The one atomic-write helper: a file appears under its final name only once it is complete.

An interrupted run (crash, ``kill -9``, full disk) never leaves a truncated file that a later run
would mistake for a finished one: the content goes to a temporary file in the same folder (so the
final ``os.replace`` is an atomic rename on one file system), which replaces the target at the end.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

# Read once: os.umask can only be read by setting it, which is not safe while other threads run.
_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` to fill a temporary file beside ``path``, then rename it over ``path``.

    The temporary name keeps ``path``'s suffix, so writers that pick a format from it (soundfile,
    ``torch.save``) behave as for the final name. Parent folders are created. Returns ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        # mkstemp creates the file 0600: give it the mode any new file gets (umask), as open() would
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically (see ``atomic_write``)."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
