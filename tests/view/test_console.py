"""new_console(): no table squeezed below what can be read, on a real narrow terminal too."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mpmarket.view.console import MIN_COLUMNS, new_console


@pytest.mark.parametrize(
    ("columns", "width"), [("1", MIN_COLUMNS), ("29", MIN_COLUMNS), ("30", 30), ("130", 130)]
)
def test_a_narrow_terminal_is_drawn_at_the_least_width_and_a_wide_one_left_alone(
    monkeypatch, columns, width
):
    monkeypatch.setenv("COLUMNS", columns)
    assert new_console(stderr=True).width == width
    assert new_console().width == width


def test_the_run_summary_reads_at_columns_1():
    """Each row of the summary on a line of its own, with its label and value: no column of borders."""
    env = {**os.environ, "COLUMNS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mpmarket", "run", "-p", "1", "-c", "2", "--sessions", "1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stderr.splitlines() if line.startswith("│")]
    assert len(rows) >= 11, rows  # the summary's rows, one line each, as at 30 columns
    for label, value in (("orders", "2"), ("books", "balanced")):
        assert any(label in row and row.rstrip(" │").endswith(value) for row in rows), rows
    assert all(len(row) == MIN_COLUMNS for row in rows), rows
