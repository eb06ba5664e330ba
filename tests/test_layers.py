"""The architecture's module map is the code's: every module in it, each importing only those above.

The map is the first code block of docs/architecture.md, top (imports none of
ours) first; ``core/market`` names ``mpmarket/core/market.py``. Packages are
layers too: they come in ``LAYERS`` order, so no package imports one below it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import mpmarket

ARCHITECTURE = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"
PACKAGE = Path(mpmarket.__file__).resolve().parent
# Entry points may import anything: the public surface, ``python -m``, pytest's hook.
ENTRY_POINTS = {"__init__", "__main__", "pytest_plugin"}
# The layers, top first; "" is the top level (errors, products).
LAYERS = ["", "core", "proc", "net", "run", "view", "bench", "cli"]


def _layers() -> list[str]:
    """The modules of the architecture map, top first, as ``package/module`` names."""
    if not ARCHITECTURE.exists():
        pytest.skip("no docs/architecture.md next to the tests")
    text = ARCHITECTURE.read_text(encoding="utf-8")
    block = text.split("## The module map", 1)[1].split("```", 2)[1]
    return [line.split()[0] for line in block.splitlines() if line and not line[0].isspace()]


def _modules() -> set[str]:
    """Every module of the package as ``package/module`` (``errors`` at the top level)."""
    found = set()
    for path in PACKAGE.rglob("*.py"):
        name = path.relative_to(PACKAGE).with_suffix("").as_posix()
        if path.stem == "__init__" and path.parent != PACKAGE:
            continue  # a layer's package: a docstring, nothing to order
        if name not in ENTRY_POINTS:
            found.add(name)
    return found


def _resolve(dotted: str, names: tuple[str, ...] = ()) -> set[str]:
    """The modules of ours an import of ``dotted`` (``from dotted import names``) reaches."""
    parts = dotted.split(".")
    if parts[0] != "mpmarket":
        return set()
    modules = _modules()
    path = "/".join(parts[1:])
    if path in modules:
        return {path}
    return {f"{path}/{name}" if path else name for name in names} & modules


def _imports_of(module: str) -> set[str]:
    """The mpmarket modules ``module`` imports, anywhere in it (type-checking ones too)."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= _resolve(node.module, tuple(alias.name for alias in node.names))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                found |= _resolve(alias.name)
    return found - {module}


def _layer_of(module: str) -> str:
    return module.rpartition("/")[0]


def test_the_map_names_every_module_once():
    layers = _layers()
    assert len(layers) == len(set(layers))
    assert sorted(layers) == sorted(_modules())


def test_each_module_imports_only_modules_above_it():
    layers = _layers()
    for depth, module in enumerate(layers):
        below = _imports_of(module) - set(layers[:depth])
        assert not below, f"{module} imports {sorted(below)}, listed below it in the map"


def test_the_packages_come_in_layer_order():
    order = [LAYERS.index(_layer_of(module)) for module in _layers()]
    assert order == sorted(order), "the map lists a package's modules out of layer order"


def test_entry_points_only_import_what_exists():
    for module in ENTRY_POINTS:
        assert _imports_of(module) <= _modules()
