"""pockettts-tools: diagnostics and converters, one sub-command each.

    pockettts-tools <sub-command> --help
    pockettts-tools <sub-command> ARGUMENTS ...

``python -m pockettts.tools`` is the same command without the console script (the recipes use it).
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path

# sub-command -> its module under pockettts.tools. A module is imported only when its sub-command
# runs, so one heavy (torch, whisper) or broken import slows or breaks no other sub-command.
SUBCOMMANDS = {
    "codec": "codec",
    "resynthesis": "resynthesis",
    "text-gain": "text_gain",
    "alignment": "alignment",
    "validation-cuts": "validation_cuts",
    "whisper-convert": "whisper_convert",
    "export-checkpoint": "export_checkpoint",
    "report": "report",
    "listening-copy": "listening_copy",
    "wordnet-sentences": "wordnet_sentences",
    "import-kyutai": "import_kyutai",
    "export-kyutai": "export_kyutai",
    "prune-decoder": "prune_decoder",
}


def summary(name: str) -> str:
    """The first line of sub-command ``name``'s docstring, read from its source without importing it."""
    module = f"{__package__}.{SUBCOMMANDS[name]}"
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        return f"(missing: no module {module})"
    docstring = ast.get_docstring(ast.parse(Path(spec.origin).read_text(encoding="utf-8"))) or ""
    return docstring.strip().split("\n", 1)[0]


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser: it reads only the sub-command name (or ``--help``)."""
    width = max(map(len, SUBCOMMANDS))
    listing = "\n".join(f"  {name:<{width}}  {summary(name)}" for name in SUBCOMMANDS)
    parser = argparse.ArgumentParser(
        prog="pockettts-tools",
        usage="%(prog)s [-h] SUB-COMMAND [ARGUMENTS ...]",
        description=__doc__,
        epilog=f"sub-commands:\n{listing}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=SUBCOMMANDS, metavar="SUB-COMMAND", help="one of the list below")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # Everything after the name is the sub-command's, ``--help`` included.
    command = build_parser().parse_args(argv[:1]).command
    module = importlib.import_module(f"{__package__}.{SUBCOMMANDS[command]}")
    parser = argparse.ArgumentParser(
        prog=f"pockettts-tools {command}",
        description=module.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    module.add_arguments(parser)
    return module.run(parser.parse_args(argv[1:]))


if __name__ == "__main__":
    sys.exit(main())
