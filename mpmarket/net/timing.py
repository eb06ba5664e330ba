"""Timed waits of the serving loop that end when asked, not up to a millisecond later.

A parked call that times out is answered when the loop wakes from its
selector; two things on Linux made that wake-up late:

- epoll counts its timeout in whole milliseconds, rounded up
  (``EpollSelector.select``): a wait computed 0.3 ms before a deadline ended
  1 ms later, 0.7 ms late. ``PreciseSelect`` waits instead on the epoll
  descriptor itself with ``select`` (readable when any registered connection
  is), whose timeout is in microseconds, then reads the events without waiting.
  One descriptor: as cheap as epoll, and nothing spins.
- a thread's timer slack (50 us by default) lets the kernel fire its timers
  that much late, to batch wake-ups. ``precise_timers`` lowers it to
  ``TIMER_SLACK_NS`` for the calling thread (``prctl``), the loop's alone.

Elsewhere (no epoll, no ``prctl``) both fall back to what the selector does.
"""

from __future__ import annotations

import select
import selectors
import sys

__all__ = ["TIMER_SLACK_NS", "PreciseSelect", "precise_timers"]

# The loop thread's timer slack: a timer fires at most this late (ns).
TIMER_SLACK_NS = 1_000
_PR_SET_TIMERSLACK = 29  # <linux/prctl.h>

_Events = list[tuple[selectors.SelectorKey, int]]


def precise_timers() -> bool:
    """Lower the calling thread's timer slack to ``TIMER_SLACK_NS``; False where it cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes  # only here: 5 ms to import, paid once by the serving thread

        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_TIMERSLACK, TIMER_SLACK_NS, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


class PreciseSelect:
    """``selector.select(timeout)`` with a timeout to the microsecond where it is epoll.

    A busy loop (events on its last turn) first looks without waiting, one
    epoll call as before; only a wait that may sleep costs a ``select`` more.
    """

    def __init__(self, selector: selectors.BaseSelector) -> None:
        self._selector = selector
        epoll = getattr(selectors, "EpollSelector", None)
        self._fd: int | None = (
            selector.fileno() if epoll is not None and isinstance(selector, epoll) else None
        )
        self._busy = False  # the last call returned events

    def __call__(self, timeout: float | None) -> _Events:
        """The events ready within ``timeout`` seconds (None: no limit, 0: ready now)."""
        fd = self._fd
        if not timeout or fd is None:
            events = self._selector.select(timeout)
        elif self._busy and (events := self._selector.select(0)):
            pass
        else:
            try:
                ready = select.select([fd], [], [], timeout)[0]
            except ValueError:  # a descriptor past FD_SETSIZE: epoll's own timeout from now on
                self._fd = None
                return self._selector.select(timeout)
            events = self._selector.select(0) if ready else []
        self._busy = bool(events)
        return events
