"""Signals that ask a process to stop: recorded as they come, acted on where it is safe.

Python runs a signal handler between two bytecodes of the main thread,
wherever that is, and its own SIGINT handler raises KeyboardInterrupt there:
inside ``os.fork()``'s at-fork hooks (the interpreter prints "Exception
ignored in: <function _releaseLock>" and drops it: the signal is lost and a
run of 80 agents went on to its end and exited 0), between starting a child
and recording it (a child nobody stops), half-way through a report file.
``Interrupts`` is the fix of the kind:

- its handler records the signal, and ``signal.set_wakeup_fd`` writes a byte
  to a pipe that whoever waits watches next to its own pipes (``fileno()``,
  ``wait()``): a wait ends the moment a signal comes;
- where a process keeps state in order (``deferred()``: a run, its shutdown,
  its reports) that is all the handler does, and the code looks
  (``check()`` raises KeyboardInterrupt) where stopping is safe;
- elsewhere (the default) the first signal raises KeyboardInterrupt at
  once, as Python's handler does; later ones are only recorded, so a stop
  under way is not itself interrupted;
- ``raising()`` (``interruptible()``) marks a wait that nothing can wake
  (a connect that retries for seconds, a call to a market that may be
  frozen, a report file that blocks): there a signal raises at once, even
  inside ``deferred()``;
- while ``os.fork()`` runs its hooks, signals are only recorded, whatever
  the mode;
- ``blocked()`` holds the signals back around a fork (``forked.start_child``),
  and a run's children start with them blocked until they have set their own
  handlers (``child_signals()``): a Ctrl-C sent to the whole process group
  cannot catch a child half-born.

The signals of the kind: SIGINT (Ctrl-C: the terminal sends it to the whole
foreground process group), SIGTERM (a supervisor: systemd, CI, ``timeout``,
``kill``: usually to one process) and SIGHUP (the terminal went away). A
run's children ignore SIGINT and SIGHUP (their runner stops them in order)
and die of SIGTERM. SIGINT or SIGHUP ignored when the process started
(``nohup``, a background job of a script) stays ignored, as POSIX tools do;
SIGTERM is always handled. A second signal hurries the stop (``hurry``).
SIGQUIT (Ctrl-\\) keeps its default, an immediate core dump for debugging;
the lifelines (``lifeline.py``) then take the run's children down.
"""

from __future__ import annotations

import contextlib
import logging  # noqa: F401  (its at-fork hooks first: ours must wrap them, see the end)
import os
import select
import signal
import threading
import time
from collections.abc import Iterable, Iterator
from types import FrameType
from typing import Any

__all__ = [
    "CHILD_IGNORED",
    "STOP_SIGNALS",
    "Interrupts",
    "TimeLimitExpired",
    "blocked",
    "child_signals",
    "time_limit",
]

# The signals that ask a process to stop.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# What a run's children ignore: the terminal's signals, which their runner acts on.
CHILD_IGNORED = (signal.SIGINT, signal.SIGHUP)

_installed: Interrupts | None = None


class Interrupts:
    """The reasons this process was asked to stop, and a pipe that wakes waits for them.

    ``install()`` on the main thread (once per process); ``installed()`` is
    the one installed, if any. An instance never installed is dormant: it
    records only ``request()``s, and Python's own handlers stay in place.
    """

    def __init__(self) -> None:
        self.signals: list[int] = []  # every stop signal received, in order
        self.reason: str | None = None  # the first: "SIGINT", ..., or a request's reason
        self._requests = 0
        self._deferred = 0
        self._raise_after: int | None = None  # inside raising(): raise past this many causes
        self._forking = 0
        self._previous: dict[int, Any] = {}
        self._wake: tuple[int, int] | None = None  # the wake-up pipe: (read, write)
        self._previous_wakeup = -1

    @staticmethod
    def installed() -> Interrupts | None:
        """The instance whose handlers are in place, if any."""
        return _installed

    def install(self) -> Interrupts:
        """Take over the stop signals (main thread only); see the module docstring."""
        global _installed
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("signal handlers are installed from the main thread")
        if _installed is not None:
            raise RuntimeError("an Interrupts is installed already")
        read, write = os.pipe()
        os.set_blocking(read, False)
        os.set_blocking(write, False)
        self._wake = (read, write)
        self._previous_wakeup = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
        for signum in STOP_SIGNALS:
            previous = signal.getsignal(signum)
            if previous == signal.SIG_IGN and signum in CHILD_IGNORED:
                continue  # nohup, a background job: it stays ignored
            self._previous[signum] = previous
            signal.signal(signum, self._handle)
        _installed = self
        return self

    def __enter__(self) -> Interrupts:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.uninstall()

    def uninstall(self) -> None:
        """Put the handlers back as they were."""
        global _installed
        if _installed is not self:
            return
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        signal.set_wakeup_fd(self._previous_wakeup)
        self._close_pipe()
        _installed = None

    def _close_pipe(self) -> None:
        if self._wake is not None:
            for fd in self._wake:
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._wake = None

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.signals.append(signum)
        if self.reason is None:
            self.reason = signal.Signals(signum).name
        if self._forking:
            return
        if self._raise_after is not None:
            if self.causes > self._raise_after:
                raise KeyboardInterrupt(self.reason)
            return
        if not self._deferred and self.causes == 1:  # a stop under way is not interrupted
            raise KeyboardInterrupt(self.reason)

    def request(self, reason: str) -> None:
        """Ask to stop for another reason than a signal (stdout lost): recorded, woken."""
        self._requests += 1
        if self.reason is None:
            self.reason = reason
        if self._wake is not None:
            with contextlib.suppress(OSError):  # full: a wake-up is pending anyway
                os.write(self._wake[1], b"\0")

    @property
    def stopping(self) -> bool:
        """Was this process asked to stop?"""
        return self.reason is not None

    @property
    def signalled(self) -> bool:
        """Did a stop signal come?"""
        return bool(self.signals)

    @property
    def causes(self) -> int:
        """How many times this process was asked to stop (signals and requests)."""
        return len(self.signals) + self._requests

    @property
    def hurry(self) -> bool:
        """Asked twice (a second Ctrl-C): no more grace for anyone."""
        return self.causes >= 2

    @property
    def deferring(self) -> bool:
        """Inside ``deferred()`` (and no ``raising()``): a signal is only recorded."""
        return self._deferred > 0 and self._raise_after is None

    def check(self) -> None:
        """Raise KeyboardInterrupt if this process was asked to stop."""
        if self.reason is not None:
            raise KeyboardInterrupt(self.reason)

    def fileno(self) -> int | None:
        """The wake-up pipe's reading end, readable once a stop comes (None if dormant)."""
        return self._wake[0] if self._wake is not None else None

    def drain(self) -> None:
        """Empty the wake-up pipe (what it says is recorded already)."""
        if self._wake is not None:
            with contextlib.suppress(OSError):
                while os.read(self._wake[0], 512):
                    pass

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a stop; True once asked to stop."""
        if self.stopping:
            return True
        wake = self.fileno()
        if wake is None:
            time.sleep(timeout)
        else:
            with contextlib.suppress(InterruptedError):
                select.select([wake], [], [], timeout)
            self.drain()
        return self.stopping

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Inside, a signal is only recorded: the code looks with ``check()``."""
        self._deferred += 1
        try:
            yield
        finally:
            self._deferred -= 1

    @contextlib.contextmanager
    def raising(self, after: int) -> Iterator[None]:
        """Inside (even within ``deferred()``), a wait nothing can wake: raise at once.

        KeyboardInterrupt as soon as more than ``after`` stops were asked (at
        the entry if that many are already). ``after=causes`` for a wait a
        new signal must cut short (a report file that blocks); ``after=1``
        for one only a second signal may (the shutdown's last calls).
        """
        saved, self._raise_after = self._raise_after, after
        try:
            if self.causes > after:
                raise KeyboardInterrupt(self.reason)
            yield
        finally:
            self._raise_after = saved

    def interruptible(self) -> contextlib.AbstractContextManager[None]:
        """``raising(0)``: a stop asked before or during it raises at once."""
        return self.raising(0)


class TimeLimitExpired(BaseException):
    """``time_limit``'s: a BaseException, so that no ``except OSError`` retry swallows it."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """TimeLimitExpired if the block takes longer than ``seconds`` (SIGALRM; main thread).

    For calls that may wait long on a peer (a frozen server) and cannot be
    given a timeout of their own (a connect retries on any OSError, so it is
    not one). Off the main thread, no limit.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expired(_signum: int, _frame: FrameType | None) -> None:
        raise TimeLimitExpired(f"took longer than {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def blocked(signals: Iterable[int] = STOP_SIGNALS) -> Iterator[None]:
    """Hold ``signals`` back on this thread (a child forked inside inherits it)."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def child_signals() -> None:
    """In a run's child: SIGINT and SIGHUP ignored, SIGTERM's default, then let them in.

    A child started inside ``blocked()`` (``forked.start_child``) has them
    held back until here: a signal sent to the whole group meanwhile waits,
    and is then ignored (or ends the child, for SIGTERM).
    """
    for signum in CHILD_IGNORED:
        signal.signal(signum, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def _before_fork() -> None:
    """No KeyboardInterrupt inside the at-fork hooks: it would be dropped there."""
    if _installed is not None:
        _installed._forking += 1


def _after_fork_in_parent() -> None:
    if _installed is not None:
        _installed._forking -= 1


def _after_fork_in_child() -> None:
    """A child forked while handlers are installed gets the process's own back."""
    global _installed
    interrupts, _installed = _installed, None
    if interrupts is None:
        return
    with contextlib.suppress(ValueError, OSError):  # not the main thread: nothing to undo
        signal.set_wakeup_fd(-1)
        for signum, previous in interrupts._previous.items():
            signal.signal(signum, previous)
    interrupts._close_pipe()


# Registered after logging's and threading's: our ``before`` runs before
# theirs and our ``after_in_parent`` after theirs.
os.register_at_fork(
    before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child
)
