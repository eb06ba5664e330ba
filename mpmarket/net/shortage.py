"""When the server runs out of something: tell it apart, say it once, pause, recover.

A server that runs out of file descriptors, threads or memory must degrade
visibly and recover, never spin and never lie. The pieces here are shared by
the accepting thread, the handshake threads and the serving loop:

- ``resource_of(error)`` names the resource an error says ran out
  (``EMFILE``/``ENFILE``: file descriptors; ``ENOBUFS``/``ENOMEM`` and
  ``MemoryError``: memory; "can't start new thread": threads), or None for
  any other error.
- ``Shortages`` logs one line when an episode starts (the resource, what the
  server does meanwhile) and one when it is over (how long, how many
  connections were refused or delayed), never a line per failure. An
  episode is over once the resource has served again with no failure for
  ``QUIET_S``.
- ``Backoff``: the pause of a thread that cannot go on until the resource
  comes back: growing from ``PAUSE_MIN_S`` to ``PAUSE_MAX_S``, so a server at
  its limit costs next to no CPU and resumes within ``PAUSE_MAX_S`` of a
  descriptor (or a thread) being freed.

Lines go to the ``mpmarket.net`` logger at WARNING: without a handler of
their own, Python writes them on stderr, where ``mpmarket serve`` prints.
"""

from __future__ import annotations

import errno
import logging
import threading
import time

__all__ = ["PAUSE_MAX_S", "PAUSE_MIN_S", "QUIET_S", "Backoff", "Shortages", "resource_of"]

log = logging.getLogger("mpmarket.net")

# The pause of a thread that waits for a resource to come back.
PAUSE_MIN_S = 0.02
PAUSE_MAX_S = 0.5
# An episode is over when the resource has worked again this long with no failure.
QUIET_S = 2.0

_RESOURCES = {
    errno.EMFILE: "file descriptors",
    errno.ENFILE: "file descriptors",
    errno.ENOBUFS: "memory",
    errno.ENOMEM: "memory",
}


def resource_of(error: BaseException) -> str | None:
    """The resource that ``error`` says ran out, or None if it says something else."""
    if isinstance(error, MemoryError):
        return "memory"
    if isinstance(error, RuntimeError) and "can't start new thread" in str(error):
        return "threads"
    if isinstance(error, OSError) and not isinstance(error, BlockingIOError):
        return _RESOURCES.get(error.errno or 0)
    return None


class _Episode:
    __slots__ = ("count", "last", "started")

    def __init__(self, now: float) -> None:
        self.started = now
        self.last = now
        self.count = 0


class Shortages:
    """The episodes of one server, one per resource; safe to use from any thread."""

    def __init__(self, who: str = "server") -> None:
        self.who = who
        self._lock = threading.Lock()
        self._episodes: dict[str, _Episode] = {}
        self.total = 0  # failures met since the start, episodes included

    def hit(self, error: BaseException, doing: str) -> None:
        """A failure for want of ``resource_of(error)``: a line if an episode starts.

        ``doing`` says what the server does about it ("accepting paused",
        "connection refused"); errors of no resource are ignored.
        """
        resource = resource_of(error)
        if resource is None:
            return
        now = time.monotonic()
        with self._lock:
            self.total += 1
            episode = self._episodes.get(resource)
            starts = episode is None
            if episode is None:
                episode = self._episodes[resource] = _Episode(now)
            episode.last = now
            episode.count += 1
        if starts:
            log.warning("mpmarket: %s out of %s (%s): %s", self.who, resource, error, doing)

    def ok(self, resource: str | None = None) -> None:
        """The resource served again (all of them, if None): a line if an episode ends."""
        if not self._episodes:  # the common case, without the lock
            return
        now = time.monotonic()
        ended = []
        with self._lock:
            for name, episode in list(self._episodes.items()):
                if (resource is None or name == resource) and now - episode.last >= QUIET_S:
                    del self._episodes[name]
                    ended.append((name, episode))
        for name, episode in ended:
            log.warning(
                "mpmarket: %s has %s again after %.1f s (%d failures met meanwhile)",
                self.who,
                name,
                episode.last - episode.started,
                episode.count,
            )

    def active(self) -> tuple[str, ...]:
        """The resources the server is short of now."""
        with self._lock:
            return tuple(self._episodes)


class Backoff:
    """Pauses that grow while a resource stays out, and start small again after."""

    def __init__(self, low: float = PAUSE_MIN_S, high: float = PAUSE_MAX_S) -> None:
        self.low = low
        self.high = high
        self._next = low

    def pause(self) -> None:
        time.sleep(self._next)
        self._next = min(self.high, self._next * 2)

    def reset(self) -> None:
        self._next = self.low
