"""Where the commands write, and what happens when stdout, stderr or a report file fails.

The rule, the same for every command (docs/usage.md, "When the output fails"):

- stdout's reader went away (EPIPE: ``mpmarket run | head -1``): the command
  stops quietly and in order, as ``yes | head`` does: a run stops its agents
  and its server, writes --json and --html, prints its summary on stderr,
  and exits 141 (128 + SIGPIPE: what a shell reports for ``yes`` there);
- stdout cannot be written otherwise (closed: ``>&-``; a full disk; an I/O
  error; an encoding that cannot represent a character): the same orderly
  stop, one line on stderr naming the error, exit 1 (as coreutils do);
- stderr fails the same ways: its lines are dropped and nothing else
  changes, as it carries only progress and diagnostics and there is nowhere
  left to tell (characters it cannot encode are escaped, as Python does);
- a reader that reads no more (a full pipe) blocks a write: where a run
  defers signals, a signal cuts that write, the stream is given up and the
  run stops as the signal asks (exit 130);
- a report file (--json, --html) that cannot be written: one line, exit 1
  if nothing graver happened; a regular file is replaced whole or not at all.

``guard_streams()`` (from ``main()``) puts the two guards in place of
``sys.stdout`` and ``sys.stderr``: the first failure of stdout raises
``StdoutLostError`` (from whatever wrote: ``echo``, rich, click) and what follows is
dropped; after any failure the descriptor is pointed at /dev/null, so that
Python's own flush at exit has nothing to complain about ("Exception ignored
... BrokenPipeError", as the Python documentation's SIGPIPE note advises).
Closed descriptors 0-2 are opened on /dev/null first, so that no file or
socket opened later takes their number and receives what was meant for them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

from mpmarket.cli.exitcodes import ExitCode
from mpmarket.proc.interrupts import Interrupts

__all__ = [
    "READER_GONE",
    "STDOUT",
    "StdoutLostError",
    "echo",
    "finish_stdout",
    "guard_streams",
    "is_stdout",
    "write_file",
]

# A report path that means stdout (``--json -``), as most command-line tools spell it.
STDOUT = "-"

# The exit code when stdout's reader went away: 128 + SIGPIPE, as a shell
# reports for a process that SIGPIPE ended (``yes | head``).
READER_GONE = ExitCode.READER_GONE


class StdoutLostError(Exception):
    """stdout took no more: its reader went away, or it is closed, full or broken."""

    def __init__(self, error: BaseException | None) -> None:
        self.error = error  # None: closed before the command started
        self.reported = False  # its line was printed already
        super().__init__(self.describe())

    @property
    def reader_gone(self) -> bool:
        """The reader of a pipe went away: the quiet case."""
        return isinstance(self.error, OSError) and self.error.errno == errno.EPIPE

    @property
    def exit_code(self) -> int:
        return READER_GONE if self.reader_gone else ExitCode.RUN_FAILED

    def describe(self) -> str:
        error = self.error
        if error is None or (isinstance(error, OSError) and error.errno == errno.EBADF):
            return "cannot write to stdout: it is closed"
        if isinstance(error, UnicodeEncodeError):
            bad = error.object[error.start : error.end]
            return (
                f"cannot write to stdout: its encoding ({error.encoding}) has no {bad!r}; "
                "set PYTHONIOENCODING=utf-8"
            )
        if isinstance(error, OSError):
            return f"cannot write to stdout: {error.strerror or error}"
        return f"cannot write to stdout: {error}"  # ValueError: closed file


@contextlib.contextmanager
def _unless_a_signal_cuts_it(give_up: Callable[[], None]) -> Iterator[bool]:
    """Around a write that may block (a reader that reads no more): a signal cuts it.

    Where signals are deferred (a run), a write blocked on a full pipe would
    hold a Ctrl-C or a SIGTERM for ever: there, a signal that comes during
    the write raises at once, the stream is given up (``give_up``) and the
    signal, recorded, stops the run where it looks. Elsewhere a signal
    raises anyway.
    """
    interrupts = Interrupts.installed()
    if interrupts is None or not interrupts.deferring:
        yield True
        return
    try:
        with interrupts.raising(interrupts.causes):
            yield True
    except KeyboardInterrupt:
        give_up()


class _GuardedStdout:
    """``sys.stdout``: its first failure raises StdoutLostError, what follows is dropped."""

    def __init__(self, stream: TextIO | None) -> None:
        self._stream = stream
        self.lost: StdoutLostError | None = None
        self.given_up = False  # a signal cut a blocked write: what follows is dropped

    def write(self, text: str) -> int:
        if self.lost is None and not self.given_up:
            if self._stream is None:
                raise self._lose(None)
            try:
                with _unless_a_signal_cuts_it(self._give_up):
                    self._stream.write(text)
            except (OSError, ValueError) as error:
                raise self._lose(error) from error
        return len(text)

    def flush(self) -> None:
        if self.lost is None and not self.given_up and self._stream is not None:
            try:
                with _unless_a_signal_cuts_it(self._give_up):
                    self._stream.flush()
            except (OSError, ValueError) as error:
                raise self._lose(error) from error

    def _give_up(self) -> None:
        self.given_up = True
        _to_devnull(1)

    def _lose(self, error: BaseException | None) -> StdoutLostError:
        self.lost = StdoutLostError(error)
        if isinstance(error, UnicodeEncodeError) and self._stream is not None:
            with contextlib.suppress(OSError, ValueError):  # what was written before it
                self._stream.flush()
        _to_devnull(1)
        return self.lost

    def isatty(self) -> bool:
        return self._stream is not None and self.lost is None and self._stream.isatty()

    def __getattr__(self, name: str) -> Any:
        if self._stream is None:
            raise AttributeError(name)
        return getattr(self._stream, name)


class _GuardedStderr:
    """``sys.stderr``: a failure drops the line and every line after it."""

    def __init__(self, stream: TextIO | None) -> None:
        self._stream = stream
        self.failed = stream is None

    def write(self, text: str) -> int:
        if not self.failed and self._stream is not None:
            try:
                with _unless_a_signal_cuts_it(self._fail):
                    try:
                        self._stream.write(text)
                    except UnicodeEncodeError:  # PYTHONIOENCODING=...:strict: escape it
                        encoding = self._stream.encoding or "ascii"
                        self._stream.write(
                            text.encode(encoding, "backslashreplace").decode(encoding)
                        )
            except (OSError, ValueError):
                self._fail()
        return len(text)

    def flush(self) -> None:
        if not self.failed and self._stream is not None:
            try:
                with _unless_a_signal_cuts_it(self._fail):
                    self._stream.flush()
            except (OSError, ValueError):
                self._fail()

    def _fail(self) -> None:
        self.failed = True
        _to_devnull(2)

    def isatty(self) -> bool:
        return self._stream is not None and not self.failed and self._stream.isatty()

    def __getattr__(self, name: str) -> Any:
        if self._stream is None:
            raise AttributeError(name)
        return getattr(self._stream, name)


def _to_devnull(fd: int) -> None:
    """Point ``fd`` at /dev/null: whatever its stream still holds goes nowhere, quietly."""
    with contextlib.suppress(OSError):
        null = os.open(os.devnull, os.O_RDWR)
        if null != fd:
            os.dup2(null, fd)
            os.close(null)


def _open_closed_std_fds() -> None:
    """Descriptors 0, 1 and 2, if closed, opened on /dev/null (their streams stay None)."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            _to_devnull(fd)


def guard_streams() -> None:
    """Put the guards in place of sys.stdout and sys.stderr (once, from ``main()``)."""
    if isinstance(sys.stdout, _GuardedStdout):
        return
    _open_closed_std_fds()
    sys.stdout = _GuardedStdout(sys.stdout)
    sys.stderr = _GuardedStderr(sys.stderr)


def echo(text: str = "", *, nl: bool = True) -> None:
    """Write a line to stdout and flush it; StdoutLostError when stdout takes no more."""
    stream = sys.stdout
    if isinstance(stream, _GuardedStdout) and stream.lost is not None:
        return  # dropped: the command knows already
    if stream is None:
        raise StdoutLostError(None)
    try:
        stream.write(text + "\n" if nl else text)
        stream.flush()
    except StdoutLostError:
        raise
    except (OSError, ValueError) as error:  # not guarded: a test's capture, say
        raise StdoutLostError(error) from error


def finish_stdout() -> StdoutLostError | None:
    """Flush stdout at the end of a command; what stopped it, if it failed."""
    stream = sys.stdout
    if stream is not None:
        try:
            stream.flush()
        except StdoutLostError:
            pass
        except (OSError, ValueError) as error:
            return StdoutLostError(error)
    return stream.lost if isinstance(stream, _GuardedStdout) else None


def is_stdout(path: Path | str | None) -> bool:
    """Is this report path ``-``, stdout?"""
    return path is not None and str(path) == STDOUT


def write_file(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path``: a regular file is replaced whole or not at all.

    Written beside it first, then renamed over it: a full disk or a signal
    never leaves half a report. A device, a pipe or a symbolic link
    (``/dev/stdout``) is written directly. OSError if it cannot be written.
    ``-`` is stdout (``echo``: StdoutLostError if it takes no more); a file
    named ``-`` is ``./-``.
    """
    if is_stdout(path):
        echo(text, nl=False)
        return
    if path.is_symlink() or (path.exists() and not path.is_file()):
        path.write_text(text, encoding="utf-8")
        return
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
