"""docs/cli.md is what docs/make_cli_docs.py makes from the click commands today."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"
SCRIPT = DOCS / "make_cli_docs.py"


def _script() -> ModuleType:
    if not SCRIPT.exists():
        pytest.skip("no docs/make_cli_docs.py next to the tests")
    spec = importlib.util.spec_from_file_location("make_cli_docs", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_md_is_up_to_date():
    script = _script()
    assert (DOCS / "cli.md").read_text(encoding="utf-8") == script.render(), (
        "docs/cli.md is out of date: run python docs/make_cli_docs.py"
    )


def test_each_help_is_the_commands_help_word_for_word():
    """The page's blocks are what `mpmarket ... --help` prints, whatever the terminal."""
    text = _script().render()
    for args in (["--help"], ["validate", "--help"], ["bench", "latency", "--help"]):
        shown = subprocess.run(
            [sys.executable, "-m", "mpmarket", *args],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "COLUMNS": "120"},
        )
        assert shown.returncode == 0, shown.stderr
        assert f"```text\n{shown.stdout}```" in text


def test_the_page_does_not_depend_on_the_terminal(monkeypatch):
    script = _script()
    monkeypatch.setenv("COLUMNS", "40")
    narrow = script.render()
    monkeypatch.setenv("COLUMNS", "200")
    assert script.render() == narrow
