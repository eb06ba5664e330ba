"""Result lines above the live view, whole: ``ResultLines`` stands in for ``sys.stdout``.

A result line is one line wherever it goes. When stdout is the very terminal
the live view is drawn on, lines written to ``sys.stdout`` must appear above
the view, or the view's next redraw would erase them. rich's own stdout
redirection (``Live(redirect_stdout=True)``) prints them as text of the
console's width: a long Coffee line was hard-wrapped in two on an 80-column
terminal, and so in a ``script`` log or a copy. ``ResultLines`` prints each
line through the console as it is (``soft_wrap``): the terminal folds a long
line on screen, the line itself stays one. stdout on a pipe, a file or
another terminal is never redirected.
"""

from __future__ import annotations

import io
import os
import sys
from typing import TextIO

from rich.console import Console, ConsoleOptions, RenderResult
from rich.segment import Segment

__all__ = ["ResultLines", "stdout_shares_the_view"]


def _terminal_device(stream: object) -> tuple[int, int] | None:
    """The terminal ``stream`` writes to (device, inode), or None: not a terminal."""
    try:
        fileno = stream.fileno()  # type: ignore[attr-defined]
        if not os.isatty(fileno):
            return None
        status = os.fstat(fileno)
    except (AttributeError, ValueError, OSError, io.UnsupportedOperation):
        return None  # replaced, closed or never a real file
    return (status.st_dev, status.st_ino)


def stdout_shares_the_view(console: Console) -> bool:
    """Is ``sys.stdout`` the very terminal the view is drawn on?

    Only then may result lines be moved above the view; stdout on another
    terminal, a pipe or a file gets them untouched.
    """
    stdout = _terminal_device(sys.stdout)
    return stdout is not None and stdout == _terminal_device(console.file)


class _Verbatim:
    """Text printed as it is: never wrapped, cropped, padded or restyled."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield Segment(self.text)


class ResultLines(io.TextIOBase):
    """``sys.stdout`` while the view is drawn on the same terminal.

    Each complete line written goes above the view, whole and unchanged
    (``soft_wrap``: the terminal folds it on screen, the line stays one);
    a line not finished yet waits for its newline. Everything else (fileno,
    isatty, encoding) is the real stdout's.
    """

    def __init__(self, console: Console, stdout: TextIO) -> None:
        super().__init__()
        self._console = console
        self.stdout = stdout
        self._partial = ""

    def __getattr__(self, name: str) -> object:
        return getattr(self.stdout, name)

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self.stdout.encoding

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return self.stdout.errors

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.stdout.fileno()

    def isatty(self) -> bool:
        return self.stdout.isatty()

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        whole, newline, rest = (self._partial + text).rpartition("\n")
        if newline:
            self._partial = rest
            self._console.print(_Verbatim(whole + newline), soft_wrap=True)
        else:
            self._partial = rest
        return len(text)

    def flush(self) -> None:
        """Lines are shown as soon as they are whole: nothing to do."""

    def release(self) -> None:
        """The view is gone: an unfinished line goes to the real stdout."""
        if self._partial:
            self.stdout.write(self._partial)
            self._partial = ""
        self.stdout.flush()
