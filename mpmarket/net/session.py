"""Who is attached to a market server: each connection's hello, and the list ``status`` shows.

The server (``mpmarket.net.server``) serves a ``SessionOf`` to each connection
under ``SESSION_IDENT``: its ``hello`` records the client if its versions
match, ``agents`` lists the clients attached. A connection is counted from
the moment the serving loop takes it (``opened``) to the moment it is closed
(``closed``), never longer: ``mpmarket serve`` waits for the count to reach
zero when it stops.
"""

from __future__ import annotations

import secrets
import threading
import time

from mpmarket import __version__
from mpmarket.net.wire import PROTOCOL_VERSION, AgentInfo

__all__ = ["Session", "SessionOf"]


class Session:
    """The second well-known object: the hello of each connection, and who is here.

    Each connection is known by a key the server gives it when it attaches.
    ``_lock`` guards ``_peers`` and ``_clients``; it is never held together
    with the market's lock.
    """

    def __init__(self) -> None:
        # The market's identity, made once per server: a client compares it
        # on every connection, as ids of carts and producers belong to one market.
        self.market_id = secrets.token_hex(16)
        self._lock = threading.Lock()
        self._peers: dict[int, str] = {}
        self._clients: dict[int, tuple[str, str, str, float]] = {}
        self.refused = 0

    def opened(self, client: int, peer: str) -> None:
        with self._lock:
            self._peers[client] = peer

    def closed(self, client: int) -> None:
        with self._lock:
            self._peers.pop(client, None)
            self._clients.pop(client, None)

    def connections(self) -> int:
        with self._lock:
            return len(self._peers)

    def hello(
        self, client: int, version: object, protocol: object, role: object, name: object
    ) -> tuple[str, int] | tuple[str, int, str]:
        """Record the client if its versions match ours; return ours either way.

        A client of our versions also gets the market's identity; another
        gets just the two versions, the answer every version understands.
        """
        ours = (__version__, PROTOCOL_VERSION)
        with self._lock:
            if (version, protocol) != ours:
                self.refused += 1
                return ours
            peer = self._peers.get(client, "?")
            self._clients[client] = (str(name)[:100], str(role)[:20], peer, time.monotonic())
        return (*ours, self.market_id)

    def describe(self, client: int) -> str:
        """Who a connection is, for a log line: its hello's name and role, its address."""
        with self._lock:
            peer = self._peers.get(client, "?")
            known = self._clients.get(client)
        return f"{known[0]} ({known[1]}) at {peer}" if known else f"a client at {peer}"

    def agents(self) -> tuple[AgentInfo, ...]:
        """The clients attached now, in the order they attached."""
        now = time.monotonic()
        with self._lock:
            clients = sorted(self._clients.values(), key=lambda client: client[3])
        return tuple(
            AgentInfo(name, role, peer, now - since) for name, role, peer, since in clients
        )


class SessionOf:
    """The session as one connection sees it: its hello is its own."""

    def __init__(self, session: Session, client: int) -> None:
        self._session = session
        self._client = client

    def hello(
        self, version: object, protocol: object, role: object, name: object
    ) -> tuple[str, int] | tuple[str, int, str]:
        return self._session.hello(self._client, version, protocol, role, name)

    def agents(self) -> tuple[AgentInfo, ...]:
        return self._session.agents()
