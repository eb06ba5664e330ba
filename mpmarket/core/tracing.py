"""A recorder of an agent's spans for ``--trace``: a bounded list in memory.

The agent loops (``agents.produce`` / ``consume``) take an optional
``Recorder``; without one they record nothing and pay one ``is not None``
test per call. With one, each market call, make time, session and order is
a span: ``(name, start_ns, end_ns, detail)``, its times from
``time.monotonic_ns()``. On Linux that is ``CLOCK_MONOTONIC``, one clock for
every process of the machine, so the runner merges the spans of every agent
(and the server's hand-over times) on one time axis without adjusting
anything. Nothing is written while the run goes: the spans stay in the
agent's memory, at most ``MAX_SPANS`` of them (the later ones are counted,
not kept), and go to the runner once, when the agent ends.
"""

from __future__ import annotations

import time

__all__ = ["MAX_SPANS", "Recorder", "Span", "now_ns"]

# At most this many spans per agent (about 100 bytes each in memory, and as
# much on its pipe at the end): 10 MB per agent at worst. A consumer makes 2
# to 3 spans per add and one per order: that covers any course case and a
# stress run of a minute; the rest is counted in ``dropped``.
MAX_SPANS = 100_000

# (name, start_ns, end_ns, detail): detail is the call's product or number.
Span = tuple[str, int, int, object]

now_ns = time.monotonic_ns


class Recorder:
    """An agent's spans, in the order they ended, at most ``cap`` of them."""

    __slots__ = ("cap", "dropped", "spans")

    def __init__(self, cap: int = MAX_SPANS) -> None:
        self.cap = cap
        self.spans: list[Span] = []
        self.dropped = 0  # spans past the cap, not kept

    def span(self, name: str, start_ns: int, end_ns: int, detail: object = None) -> None:
        """Record one span (``name`` from ``start_ns`` to ``end_ns``)."""
        if len(self.spans) < self.cap:
            self.spans.append((name, start_ns, end_ns, detail))
        else:
            self.dropped += 1
