"""The test suite's own layout: its folders mirror the package's, and test modules share code only
through ``tests/support.py`` (helpers and constants) and ``conftest.py`` files (fixtures), never by
importing one another."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support import ROOT

TESTS = ROOT / "tests"
PACKAGE = ROOT / "pockettts"
SUPPORT = "tests.support"
# Every module under tests/ is a test module or one of these.
NON_TEST_MODULES = {"__init__.py", "conftest.py"}


def _python_files() -> list[Path]:
    return sorted(p for p in TESTS.rglob("*.py") if "__pycache__" not in p.parts)


def _shared_code_imports(source: str) -> list[str]:
    """The modules of the test suite that ``source`` imports, other than the shared helpers
    (relative imports written with their leading dots)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level:
            found.append("." * node.level + (node.module or ""))
            continue
        if isinstance(node, ast.ImportFrom) and node.module == "tests":
            names = [f"tests.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found += [name for name in names if name.split(".")[0] == "tests" and name != SUPPORT]
    return found


def test_test_modules_share_code_only_through_support_and_conftest():
    offenders = {
        str(path.relative_to(ROOT)): imports
        for path in _python_files()
        if (imports := _shared_code_imports(path.read_text(encoding="utf-8")))
    }
    assert offenders == {}, "import helpers from tests.support; fixtures belong in a conftest.py"


def test_every_module_is_a_test_module_a_conftest_or_the_support_module():
    others = [
        str(path.relative_to(ROOT))
        for path in _python_files()
        if not path.name.startswith("test_")
        and path.name not in NON_TEST_MODULES
        and path != TESTS / "support.py"
    ]
    assert others == []


def test_test_folders_mirror_the_package():
    folders = sorted(p for p in TESTS.rglob("*") if p.is_dir() and "__pycache__" not in p.parts)
    assert len(folders) >= 5
    unmatched = [str(f.relative_to(ROOT)) for f in folders if not (PACKAGE / f.relative_to(TESTS)).is_dir()]
    assert unmatched == [], "a tests/<sub>/ folder holds the tests of pockettts/<sub>/"
    # Without __init__.py, same-named test modules in two folders would clash.
    assert [str(f.relative_to(ROOT)) for f in folders if not (f / "__init__.py").is_file()] == []


def test_the_import_check_catches_what_it_guards():
    source = (
        "from tests.conftest import CONFIG_DIR\nimport tests.test_tts\nfrom tests import test_vae, support\n"
        "from .test_losses import TINY_WAVLM\nfrom tests.support import write_tone\nimport torch\n"
        "def f():\n    from tests.test_eval_runner import meta\n"
    )
    assert _shared_code_imports(source) == [
        "tests.conftest", "tests.test_tts", "tests.test_vae", ".test_losses", "tests.test_eval_runner"
    ]  # fmt: skip
