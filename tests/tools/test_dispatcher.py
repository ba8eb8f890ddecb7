"""``pockettts-tools``: the dispatcher lists and runs every registered sub-command, each sub-command
module keeps the protocol, and argument parsing stays out of the library modules."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from pockettts.tools.__main__ import SUBCOMMANDS, main, summary
from tests.support import ROOT

PACKAGE = ROOT / "pockettts"
# The command-line front-ends: the only packages that may parse arguments.
FRONT_ENDS = ("tools", "cli")


def _installed(name: str) -> bool:
    return importlib.util.find_spec(f"pockettts.tools.{SUBCOMMANDS[name]}") is not None


def test_help_lists_every_sub_command_with_its_summary(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    listing = capsys.readouterr().out.split("sub-commands:", 1)[1]
    for name in SUBCOMMANDS:
        assert any(line.split() and line.split()[0] == name for line in listing.splitlines()), name
        if _installed(name):
            assert summary(name) and summary(name) in listing, name


def test_every_tools_module_is_registered():
    modules = {p.stem for p in (PACKAGE / "tools").glob("*.py") if not p.stem.startswith("_")}
    assert modules <= set(SUBCOMMANDS.values())


@pytest.mark.parametrize("name", list(SUBCOMMANDS))
def test_sub_command_module_keeps_the_protocol(name):
    if not _installed(name):
        pytest.skip(f"pockettts.tools.{SUBCOMMANDS[name]} is not in this tree")
    module = importlib.import_module(f"pockettts.tools.{SUBCOMMANDS[name]}")
    assert callable(module.add_arguments) and callable(module.run)
    assert module.__doc__ and module.__doc__.strip().splitlines()[0] == summary(name)


def test_sub_command_help_is_the_sub_commands_own(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["report", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: pockettts-tools report") and "--baseline" in out


def test_unknown_or_missing_sub_command_is_a_clear_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["resynthesise"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'resynthesise'" in err and "'resynthesis'" in err
    with pytest.raises(SystemExit):
        main([])
    assert "required: SUB-COMMAND" in capsys.readouterr().err


def test_python_dash_m_runs_the_dispatcher():
    result = subprocess.run(
        [sys.executable, "-m", "pockettts.tools", "--help"], capture_output=True, text=True, check=True
    )
    assert "usage: pockettts-tools" in result.stdout and "text-gain" in result.stdout


def _imports_argparse(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import) and any(alias.name == "argparse" for alias in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and node.module == "argparse":
            return True
    return False


def test_only_the_front_ends_parse_arguments():
    library = [
        path for path in sorted(PACKAGE.rglob("*.py")) if path.relative_to(PACKAGE).parts[0] not in FRONT_ENDS
    ]
    assert len(library) > 20
    offenders = [str(path.relative_to(PACKAGE)) for path in library if _imports_argparse(path)]
    assert offenders == []
