"""The market server: one Marketplace hosted by a ``BaseManager`` server.

It is the stock ``multiprocessing.managers`` server (reached through the
typed adapter ``mpmarket.net.mp_private``) with these added:

- **One serving thread.** Authenticated connections are served by one
  event loop (``mpmarket.net.loop``) instead of a thread each; calls that wait
  are parked in the market and answered when complete. Same wire format.
- **One well-known object.** The server installs its Marketplace under the
  fixed identity ``"market"`` when it starts, so a worker attaches with just
  the address and the authkey: one connection, no ``create`` or ``incref``
  round trips, and nothing else is reachable (no registered typeids).
- **Connect storms.** The stock listener has a small backlog (16 up to
  Python 3.12); hundreds of agents connecting at once overflow it and, as the
  client speaks second in the handshake, some of them wait forever for a
  challenge that never comes. The server listens with a deep backlog, runs
  each handshake on a short-lived thread bounded by a timeout, and clients
  (``mpmarket.net.client``) bound every step of theirs too, retrying until
  their attach deadline.
- **A hello on attach.** Each connection, right after the handshake, calls
  ``hello`` on a second well-known object (``"session"``) with its mpmarket
  and protocol versions, its role and its name. A worker of another version
  is refused; the server keeps the attached clients for ``mpmarket status``.
  The answer carries the market's identity, a random id made when the server
  starts, so a client notices a server restarted on its address.
- **Nothing else reachable.** The server answers only ``accept_connection``
  (and ``shutdown`` for the server a local run starts), never ``create``,
  ``incref`` or ``debug_info``, and has no fallback methods (``#GETVALUE``).

Two ways to serve: ``start_server`` runs a manager process for a local run
(it exits when its run dies); ``ServedMarket`` serves on threads of the
calling process, for ``mpmarket serve``, which stays in the foreground and
reads the market directly for its live view.

BaseManager speaks pickle: whoever holds the authkey can run code in the
server. The key is a secret: generated per run (``new_authkey``) or read from
a file or the environment, never a constant, never logged.
"""

from __future__ import annotations

import functools
import itertools
import os
import secrets
import socket
import threading
import time
from multiprocessing import connection
from multiprocessing.context import BaseContext
from typing import Any

from mpmarket import __version__
from mpmarket.core.market import Marketplace
from mpmarket.net.client import open_connection
from mpmarket.net.loop import ConnectionLoop, Served
from mpmarket.net.mp_private import FastConnection, Manager, Server
from mpmarket.net.oplog import LogSettings
from mpmarket.net.wire import (
    EXPOSED,
    HANDSHAKE_TIMEOUT,
    MARKET_IDENT,
    PROTOCOL_VERSION,
    SESSION_EXPOSED,
    SESSION_IDENT,
    Address,
    AgentInfo,
    set_receive_timeout,
)
from mpmarket.proc.lifeline import PARENT_CHECK_INTERVAL, Lifeline

__all__ = [
    "CART_LEASE_S",
    "ManagerServer",
    "MarketManager",
    "ServedMarket",
    "new_authkey",
    "start_server",
]

# Pending connections the listener queues. The stock value overflows when
# hundreds of agents attach together; the kernel caps it at somaxconn.
LISTEN_BACKLOG = 4096


def new_authkey() -> bytes:
    """A fresh random authkey for one run."""
    return secrets.token_bytes(32)


_hosted_market: Marketplace | None = None


def _host_market(
    queue_size_per_producer: int, log: LogSettings | None, parent_pid: int | None = None
) -> None:
    """Create the market of this server process (a manager initializer)."""
    global _hosted_market
    logger = log.open() if log is not None else None
    _hosted_market = Marketplace(queue_size_per_producer, logger=logger)
    if parent_pid is not None:
        threading.Thread(
            target=_exit_when_orphaned, args=(parent_pid,), name="parent-watch", daemon=True
        ).start()


def _exit_when_orphaned(run_pid: int) -> None:
    lifeline = Lifeline(run_pid)
    while lifeline.alive():
        time.sleep(PARENT_CHECK_INTERVAL)
    os._exit(1)


class _Session:
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

    def agents(self) -> tuple[AgentInfo, ...]:
        """The clients attached now, in the order they attached."""
        now = time.monotonic()
        with self._lock:
            clients = sorted(self._clients.values(), key=lambda client: client[3])
        return tuple(
            AgentInfo(name, role, peer, now - since) for name, role, peer, since in clients
        )


class _SessionOf:
    """The session as one connection sees it: its hello is its own."""

    def __init__(self, session: _Session, client: int) -> None:
        self._session = session
        self._client = client

    def hello(
        self, version: object, protocol: object, role: object, name: object
    ) -> tuple[str, int] | tuple[str, int, str]:
        return self._session.hello(self._client, version, protocol, role, name)

    def agents(self) -> tuple[AgentInfo, ...]:
        return self._session.agents()


def _peer_of(conn: connection.Connection) -> str:
    sock = socket.socket(fileno=conn.fileno())
    try:
        return str(sock.getpeername()[0])
    except (OSError, IndexError):
        return "?"
    finally:
        sock.detach()


class ManagerServer(Server):
    """The manager server with a deep backlog, the market installed, one serving thread.

    The accepting thread hands each new connection to a short-lived thread
    for the authentication handshake (blocking code of the standard library,
    bounded here by ``HANDSHAKE_TIMEOUT``); an authenticated
    ``accept_connection`` is then served by the ``ConnectionLoop``, on one
    thread for all connections (see ``mpmarket.net.loop``). Only
    ``accept_connection`` (and, for a local run's server, ``shutdown``) may
    start a connection; no fallback methods (``#GETVALUE`` would try to pickle
    the market itself).
    """

    def __init__(
        self,
        registry: dict[str, Any],
        address: Address,
        authkey: bytes,
        serializer: str,
        *,
        market: Marketplace | None = None,
        remote_shutdown: bool = True,
    ) -> None:
        super().__init__(registry, address, authkey, serializer)
        # The stock Listener takes no backlog argument past its own: listen() again.
        self.listening_socket().listen(LISTEN_BACKLOG)
        self.public = ["accept_connection", "shutdown"]
        if not remote_shutdown:
            self.public = ["accept_connection"]
        self.fallback_mapping = {}
        market = market if market is not None else _hosted_market
        if market is None:
            raise RuntimeError("the market server started without a market")
        self.market = market
        self.stop_event = threading.Event()  # serve_forever sets it again; harmless
        self.session = _Session()
        self.loop = ConnectionLoop(market)
        self._client_keys = itertools.count(1)

    def accepter(self) -> None:
        """Start the serving loop, then accept connections until the process ends."""
        threading.Thread(target=self.loop.run, name="market-loop", daemon=True).start()
        while True:
            try:
                conn = self.listener.accept()
            except OSError:
                continue
            threading.Thread(target=self._handshake, args=(conn,), daemon=True).start()

    def _handshake(self, conn: connection.Connection) -> None:
        """Authenticate a new connection and hand it to the loop, or close it."""
        adopted = False
        try:
            conn.__class__ = FastConnection  # accepted as a stock Connection
            set_receive_timeout(conn.fileno(), HANDSHAKE_TIMEOUT)
            connection.deliver_challenge(conn, self.authkey)
            connection.answer_challenge(conn, self.authkey)
            method = conn.recv()[1]
            if method not in self.public:
                conn.send(("#TRACEBACK", f"{method!r} unrecognized"))
            elif method == "shutdown":
                self.shutdown(conn)
            else:
                conn.send(("#RETURN", None))
                set_receive_timeout(conn.fileno(), 0)
                self._adopt(conn)
                adopted = True
        except Exception:  # a failed or timed-out handshake: just drop it
            pass
        finally:
            if not adopted:
                conn.close()

    def _adopt(self, conn: connection.Connection) -> None:
        client = next(self._client_keys)
        self.session.opened(client, _peer_of(conn))
        served: Served = {
            MARKET_IDENT: (self.market, frozenset(EXPOSED)),
            SESSION_IDENT: (_SessionOf(self.session, client), frozenset(SESSION_EXPOSED)),
        }
        self.loop.adopt(conn, served, functools.partial(self.session.closed, client))


# How long a stopping ``mpmarket serve`` waits for attached clients to see the
# closed market and leave, so that they end cleanly rather than by a lost
# connection. Producers notice at their next call, after at most a make time.
SERVE_DRAIN_GRACE = 3.0


# The lease of a remote consumer's cart: a cart that holds units and sees no
# call for this long is taken for the cart of a vanished consumer, and its
# units go back on sale. A live consumer is always in a call or microseconds
# from its next one, so only a dead, frozen or cut-off one comes near it.
CART_LEASE_S = 30.0
# How often the lease is checked.
LEASE_CHECK_S = 1.0


class ServedMarket:
    """A market served on threads of this process: ``mpmarket serve``.

    The accepting and serving threads are daemons: ``stop()``
    closes the market, lets attached clients see it and leave, and the process
    then exits with them. The stock listener cannot be closed under its
    accepting thread (it would spin on the closed socket), so a ServedMarket
    lives as long as its process. A third daemon enforces the carts' lease
    (``CART_LEASE_S``); ``released`` lists the carts it gave back.
    """

    def __init__(
        self,
        market: Marketplace,
        address: Address,
        authkey: bytes,
        *,
        cart_lease_s: float = CART_LEASE_S,
    ) -> None:
        self.market = market
        self.cart_lease_s = cart_lease_s
        self.released: list[int] = []
        self._lease_keeper = threading.Thread(
            target=self._keep_leases, name="cart-lease", daemon=True
        )
        self._server = ManagerServer(
            {}, address, authkey, "pickle", market=market, remote_shutdown=False
        )
        self.address: Address = self._server.address
        self._accepter = threading.Thread(
            target=self._server.accepter, name="accepter", daemon=True
        )

    def start(self) -> None:
        self._accepter.start()
        self._lease_keeper.start()

    def _keep_leases(self) -> None:
        while not self.market.closed:
            time.sleep(min(LEASE_CHECK_S, self.cart_lease_s))
            self.released += self.market.expire_idle_carts(self.cart_lease_s)

    def agents(self) -> tuple[AgentInfo, ...]:
        return self._server.session.agents()

    def connections(self) -> int:
        return self._server.session.connections()

    @property
    def refused(self) -> int:
        """Connections refused at hello for another version."""
        return self._server.session.refused

    def stop(self, grace: float = SERVE_DRAIN_GRACE) -> None:
        """Close the market, then wait up to ``grace`` seconds for clients to leave."""
        self.market.close()
        deadline = time.monotonic() + grace
        while self.connections() and time.monotonic() < deadline:
            time.sleep(0.02)


class MarketManager(Manager):
    """A BaseManager whose server hosts one Marketplace under a known identity.

    Its own requests (``shutdown``) go through ``open_connection``: the stock
    client does not set TCP_NODELAY, and its shutdown request waited 40 ms
    on the server's delayed ACK, at the end of every run.
    """

    _Server = ManagerServer

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._Client = _manager_client


def _manager_client(address: Address, authkey: bytes) -> connection.Connection:
    return open_connection(address, authkey, time.monotonic() + HANDSHAKE_TIMEOUT)


def start_server(
    queue_size_per_producer: int,
    *,
    authkey: bytes,
    address: Address = ("127.0.0.1", 0),
    ctx: BaseContext | None = None,
    log: LogSettings | None = None,
) -> MarketManager:
    """Start a server process; the caller must ``shutdown()`` it.

    The server exits by itself if this process dies without shutting it down.
    """
    manager = MarketManager(address=address, authkey=authkey, ctx=ctx)
    manager.start(_host_market, (queue_size_per_producer, log, os.getpid()))
    return manager
