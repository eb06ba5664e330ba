"""The public surface of ``mpmarket``: pinned, importable, and light to import.

As httpx's ``tests/test_exported_members.py`` and trio's ``test_exports.py``:
a name added to or dropped from ``mpmarket.__all__`` is a change of the public
API, so it must show up here (and in CHANGELOG.md).
"""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

import mpmarket
from mpmarket import errors

PUBLIC = [
    "AuthkeyError",
    "CartRevokedError",
    "Coffee",
    "InvalidArgumentError",
    "MarketBooks",
    "MarketChangedError",
    "MarketClosedError",
    "MarketError",
    "MarketLostError",
    "MarketProxy",
    "MarketSnapshot",
    "MarketUnavailableError",
    "Marketplace",
    "MpmarketError",
    "Product",
    "RunError",
    "StallError",
    "Tea",
    "UnknownCartError",
    "UnknownProducerError",
    "UnsafeReplyError",
    "VersionMismatchError",
    "Workload",
    "WorkloadError",
    "__version__",
    "connect",
    "load_workload",
    "start_server",
]

# What ``import mpmarket`` must not load: the served market, the manager
# machinery under it, and the terminal and command-line libraries.
HEAVY = ("mpmarket.net", "multiprocessing.managers", "rich", "click")

CHANGELOG = Path(__file__).resolve().parents[1] / "CHANGELOG.md"


def test_all_is_pinned():
    assert mpmarket.__all__ == PUBLIC


def test_every_error_is_public():
    assert set(errors.__all__) <= set(mpmarket.__all__)


@pytest.mark.parametrize("name", PUBLIC)
def test_every_name_resolves(name):
    value = getattr(mpmarket, name)
    assert value is not None
    namespace: dict[str, object] = {}
    exec(f"from mpmarket import {name}", namespace)
    assert namespace[name] is value
    module = getattr(value, "__module__", None)
    if module is not None:  # defined where it says: the same object, not a copy
        assert getattr(importlib.import_module(module), name) is value


def test_dir_lists_every_name():
    assert set(PUBLIC) <= set(dir(mpmarket))


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        mpmarket.nonexistent  # noqa: B018


def test_lazy_names_are_public_and_typed():
    """The lazy table and the imports spelled out for type checkers name the same."""
    assert set(mpmarket._LAZY) <= set(mpmarket.__all__)
    tree = ast.parse(Path(mpmarket.__file__).read_text(encoding="utf-8"))
    typed: dict[str, str | None] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for imported in node.body:
                assert isinstance(imported, ast.ImportFrom)
                typed |= {alias.name: imported.module for alias in imported.names}
    assert typed == mpmarket._LAZY


def test_import_is_light():
    code = (
        "import sys, mpmarket; "
        f"print('\\n'.join(m for m in sys.modules if m.startswith({HEAVY!r})))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.split() == []


def test_a_lazy_name_loads_its_module_on_first_use():
    code = (
        "import sys, mpmarket; "
        "assert not any(m.startswith('mpmarket.net') for m in sys.modules); "
        "mpmarket.connect; "
        "assert any(m.startswith('mpmarket.net') for m in sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], timeout=60, check=True)


def test_the_changelog_tells_this_version():
    if not CHANGELOG.exists():
        pytest.skip("no CHANGELOG.md next to the tests")
    releases = re.findall(r"^## \[(\d[^\]]*)\]", CHANGELOG.read_text(encoding="utf-8"), re.M)
    assert releases and releases[0] == mpmarket.__version__
