"""What the serving loop keeps per connection and per waiting call.

``Client``: one adopted connection, its buffers and its parked call;
``Parked``: a call waiting in the market, answered when woken or timed out;
``WAITING_CALLS``: the exposed methods that may wait, split in two around
the market's wake (``mpmarket.net.loop`` serves them).
"""

from __future__ import annotations

import selectors
import socket
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from mpmarket.core.market import AddWait, Marketplace, PublishWait
from mpmarket.net.framing import Framing

__all__ = ["WAITING_CALLS", "Client", "Parked", "Served"]

# What one connection may reach: well-known identity -> (object, its exposed methods).
Served = dict[str, tuple[Any, frozenset[str]]]


class _Loop(Protocol):
    """What a parked call needs of its loop: where woken calls queue, and a kick."""

    _woken: deque[Parked]
    _thread_id: int | None

    def _kick(self) -> None: ...


# -- the calls that may wait ---------------------------------------------------
# Each: start(market, wake, *args, **kwds) -> result or a wait; finish(market,
# wait) -> result. The arguments after ``wake`` are those of the exposed
# method, so a call with wrong ones fails as it would there (TypeError, sent back).


def _start_add_to_cart(
    market: Marketplace, wake: Callable[[], None], cart_id: int, product: Any, timeout: float = 0.0
) -> bool | AddWait:
    outcome = market.start_add(wake, cart_id, product, 1, timeout)
    return outcome if isinstance(outcome, AddWait) else outcome == 1


def _finish_add_to_cart(market: Marketplace, wait: AddWait) -> bool:
    return market.finish_add(wait) == 1


WAITING_CALLS: dict[str, tuple[Callable[..., Any], Callable[[Marketplace, Any], Any]]] = {
    "add_many": (Marketplace.start_add, Marketplace.finish_add),
    "add_to_cart": (_start_add_to_cart, _finish_add_to_cart),
    "publish": (Marketplace.start_publish, Marketplace.finish_publish),
}


# -- connections and parked calls ----------------------------------------------


@dataclass(eq=False)
class Client:
    """One adopted connection: its socket, what it may reach, and its buffers."""

    sock: socket.socket
    served: Served
    on_close: Callable[[], None]
    describe: Callable[[], str]  # who it is, for a log line
    framing: Framing  # its requests, cut from its reads
    outbox: bytearray = field(default_factory=bytearray)  # what the socket did not take
    parked: Parked | None = None  # the call waiting in the market, if any
    backlog: deque[bytes | bytearray] = field(default_factory=deque)  # requests sent meanwhile
    events: int = selectors.EVENT_READ  # what the selector watches for (0: not registered)
    paused: bool = False  # not read until it catches up (OUTBOX_HIGH, BACKLOG_HIGH)
    closed: bool = False


class Parked:
    """A call waiting in the market: answered when woken or when its time is up."""

    __slots__ = ("client", "done", "finish", "loop", "wait")

    def __init__(
        self, loop: _Loop, client: Client, finish: Callable[[Marketplace, Any], Any]
    ) -> None:
        self.loop = loop
        self.client = client
        self.finish = finish
        self.wait: AddWait | PublishWait | None = None
        self.done = False

    def wake(self) -> None:
        """Called by the market, its lock held: queue the answer, never block."""
        self.loop._woken.append(self)
        if threading.get_ident() != self.loop._thread_id:  # a lease or a stop, say
            self.loop._kick()
