"""Flag: a start or stop signal for a run's children that setting never waits on.

``multiprocessing.Event.set()`` wakes each process waiting on it and then
*waits for each to say it woke* (``Condition.notify`` acquires a semaphore
once per sleeper). An agent frozen by SIGSTOP while it waits never says so,
and one killed while it waits is counted as a sleeper for ever: the runner's
``set()`` then blocks for good, signals or not (a run whose producer was
frozen hung in its shutdown). A ``Flag`` is a pipe: ``set()`` writes one byte
that nobody reads, so the pipe stays readable for every process at once, and
no one waits on anyone. It has what the agents use of an Event (``is_set``,
``wait``), and pickles for spawn and forkserver (its reading end only).
"""

from __future__ import annotations

from multiprocessing.context import BaseContext
from typing import Any

__all__ = ["Flag"]


class Flag:
    """Set once, by the process that made it; every process may look or wait."""

    def __init__(self, ctx: BaseContext) -> None:
        # Every concrete context has Pipe; typeshed's BaseContext has it too.
        self._reader, self._writer = ctx.Pipe(duplex=False)
        self._set = False

    def set(self) -> None:
        """Set it (at once: a byte in a pipe, never read); safe to call again."""
        if not self._set and self._writer is not None:
            self._set = True
            self._writer.send_bytes(b"1")

    def is_set(self) -> bool:
        return self._set or self._reader.poll()

    def wait(self, timeout: float | None = None) -> bool:
        """Until it is set, at most ``timeout`` seconds (None: for ever); is it set?"""
        return self._set or self._reader.poll(timeout)

    def __getstate__(self) -> dict[str, Any]:
        return {"_reader": self._reader, "_writer": None, "_set": False}
