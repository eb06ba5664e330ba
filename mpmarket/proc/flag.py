"""ProcessFlag: a one-way flag (a run's start, its stop) that no process can block.

``multiprocessing.Event`` is a condition variable over semaphores: ``set()``
wakes each sleeping waiter and then waits, without a timeout, for that waiter
to say it woke. A waiter frozen by SIGSTOP, or killed by SIGKILL while it
waits, never says so, and the process that sets the event hangs for ever;
``is_set()`` takes the same lock, so every other process hangs behind it.
A producer frozen or killed in its make time (``stop.wait(make_time)``) hung
a run's shutdown that way.

A ProcessFlag is a pipe nobody reads: ``set()`` writes one byte into it (an
empty pipe always takes it at once, so it never blocks), and from then on
its reading end is readable for every process that holds it, for ever.
``is_set()`` and ``wait(timeout)`` only poll that end: nothing is taken,
nothing is owed, and a waiter that is frozen or gone costs nobody anything::

    runner ── set(): one byte ──> pipe ──> readable: every agent's wait() returns

It has what ``core.agents.StopSignal`` asks for (``is_set``, ``wait``) and
pickles for spawn and forkserver (the reading end travels, the writing end
stays with the process that made it); under fork it is simply inherited.
"""

from __future__ import annotations

from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext

__all__ = ["ProcessFlag"]


class ProcessFlag:
    """A flag set once by its maker, seen (and waited for) by any process."""

    def __init__(self, ctx: BaseContext) -> None:
        reader, writer = ctx.Pipe(duplex=False)
        self._reader: Connection = reader
        self._writer: Connection | None = writer

    def set(self) -> None:
        """Set the flag: returns at once, whoever waits or does not."""
        if self._writer is None:
            raise RuntimeError("only the process that made a ProcessFlag sets it")
        if not self._writer.closed and not self._reader.poll(0):
            self._writer.send_bytes(b"\x01")

    def is_set(self) -> bool:
        return self._reader.poll(0)

    def wait(self, timeout: float | None = None) -> bool:
        """Until the flag is set or ``timeout`` passes (None: for ever); True if set."""
        return self._reader.poll(timeout)

    def __getstate__(self) -> dict[str, object]:
        """To a spawned process: the reading end only."""
        return {"_reader": self._reader, "_writer": None}
