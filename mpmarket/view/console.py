"""new_console(): rich's console, never narrower than a table can be read.

rich fits a table to the terminal's width by squeezing its columns: at 30
columns the summary's longer labels are cut to an ellipsis but every row
still reads, and each line fits (tests/run/test_terminal_lines.py); at
``COLUMNS=1`` a table was a column of borders. A console narrower than
``MIN_COLUMNS`` draws at that width instead, and the terminal wraps the
lines. Wider terminals are left alone (rich keeps following their width).
"""

from __future__ import annotations

from rich.console import Console

__all__ = ["MIN_COLUMNS", "new_console"]

# The narrowest width a table is drawn at: its rows still read (shortened labels).
MIN_COLUMNS = 30


def new_console(*, stderr: bool = False) -> Console:
    """A rich ``Console`` on stderr or stdout, at least ``MIN_COLUMNS`` wide."""
    console = Console(stderr=stderr)
    if console.width < MIN_COLUMNS:
        console.width = MIN_COLUMNS
    return console
