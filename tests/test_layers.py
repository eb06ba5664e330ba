"""The README's module map is the code's: every module in it, each importing only those above."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import mpmarket

README = Path(__file__).resolve().parents[1] / "README.md"
PACKAGE = Path(mpmarket.__file__).resolve().parent
ENTRY_POINTS = {"__init__", "__main__"}


def _layers() -> list[str]:
    """The modules of the README's architecture map, top (no imports of ours) first."""
    if not README.exists():
        pytest.skip("no README.md next to the tests")
    block = README.read_text(encoding="utf-8").split("## Architecture", 1)[1].split("```", 2)[1]
    names = [line.split()[0] for line in block.splitlines() if line and not line[0].isspace()]
    # "cli ... (cli_bench: mpmarket bench)": the bench commands sit just under cli.
    return [*names[:-1], "cli_bench", names[-1]] if names[-1] == "cli" else names


def _imports_of(module: str) -> set[str]:
    """The mpmarket modules ``module`` imports, anywhere in it (type-checking ones too)."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            package, _, name = node.module.partition(".")
            if package == "mpmarket":
                found |= {name} if name else {alias.name for alias in node.names}
        elif isinstance(node, ast.Import):
            for alias in node.names:
                package, _, name = alias.name.partition(".")
                if package == "mpmarket" and name:
                    found.add(name.partition(".")[0])
    return (found & _modules()) - {module}  # not names like __version__


def _modules() -> set[str]:
    return {path.stem for path in PACKAGE.glob("*.py")} - ENTRY_POINTS


def test_the_map_names_every_module_once():
    assert sorted(_layers()) == sorted(_modules())


def test_each_module_imports_only_modules_above_it():
    layers = _layers()
    for depth, module in enumerate(layers):
        below = _imports_of(module) - set(layers[:depth])
        assert not below, f"{module} imports {sorted(below)}, listed below it in the README"
