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
- **Resources that run out.** Out of descriptors, threads or memory, the
  server pauses accepting (``mpmarket.net.shortage``: no spinning, one line
  when it starts and one when it is over), refuses a connection before it is
  told it is in, and counts only the connections it serves. Requests are
  bounded (``max_request_size``), the handshake's too.
- **A hello on attach.** Each connection, right after the handshake, calls
  ``hello`` on a second well-known object (``"session"``) with its mpmarket
  and protocol versions, its role and its name. A worker of another version
  is refused; the server keeps the attached clients for ``mpmarket status``.
  The answer carries the market's identity, a random id made when the server
  starts, so a client notices a server restarted on its address.
- **Only the market's types.** Requests, the handshake's included, are read
  with an allow-list (``mpmarket.net.safe_pickle``); anything else is refused
  before it is built, answered, logged in one line, and its connection closed.
- **Nothing else reachable.** The server answers only ``accept_connection``
  (and ``shutdown`` for the server a local run starts), never ``create``,
  ``incref`` or ``debug_info``, and has no fallback methods (``#GETVALUE``).

Two ways to serve: ``start_server`` runs a manager process for a local run
(it exits when its run dies); ``ServedMarket`` serves on threads of the
calling process, for ``mpmarket serve``, which stays in the foreground and
reads the market directly for its live view.

BaseManager speaks pickle, and a pickle can name any callable: requests are
read with an allow-list (``mpmarket.net.safe_pickle``), so a holder of the
key can call the market's operations and build its products, nothing else
(docs/security.md). The key is a secret: generated per run (``new_authkey``) or read from
a file or the environment, never a constant, never logged.
"""

from __future__ import annotations

import errno
import functools
import itertools
import logging
import os
import secrets
import select
import socket
import threading
import time
from multiprocessing import connection
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import Any

from mpmarket.core.market import Marketplace
from mpmarket.net.client import open_connection
from mpmarket.net.loop import ConnectionLoop, Served
from mpmarket.net.mp_private import FastConnection, Manager, Server
from mpmarket.net.oplog import LogSettings
from mpmarket.net.safe_pickle import RefusedPayload, load_request, refused
from mpmarket.net.session import Session, SessionOf
from mpmarket.net.shortage import QUIET_S, Backoff, Shortages, resource_of
from mpmarket.net.tls import ServerTLS, accept_tls, load_server_tls
from mpmarket.net.wire import (
    DEFAULT_MAX_REQUEST_SIZE,
    EXPOSED,
    HANDSHAKE_TIMEOUT,
    MARKET_IDENT,
    SESSION_EXPOSED,
    SESSION_IDENT,
    Address,
    AgentInfo,
    set_receive_timeout,
)
from mpmarket.proc.lifeline import exit_when_orphaned

__all__ = [
    "CART_LEASE_S",
    "ManagerServer",
    "MarketManager",
    "ServedMarket",
    "new_authkey",
    "start_server",
]

_log = logging.getLogger(__name__)

# Pending connections the listener queues. The stock value overflows when
# hundreds of agents attach together; the kernel caps it at somaxconn.
LISTEN_BACKLOG = 4096


def new_authkey() -> bytes:
    """A fresh random authkey for one run."""
    return secrets.token_bytes(32)


_hosted_market: Marketplace | None = None
_hosted_tls: ServerTLS | None = None


def _host_market(
    queue_size_per_producer: int,
    log: LogSettings | None,
    parent_pid: int | None = None,
    tls_files: tuple[str, str] | None = None,
) -> None:
    """Create the market of this server process (a manager initializer).

    ``tls_files``: the certificate and key files to serve TLS with.
    """
    global _hosted_market, _hosted_tls
    logger = log.open() if log is not None else None
    _hosted_market = Marketplace(queue_size_per_producer, logger=logger)
    if tls_files is not None:
        _hosted_tls = load_server_tls(Path(tls_files[0]), Path(tls_files[1]))
    if parent_pid is not None:
        exit_when_orphaned(parent_pid)


def _peer_of(conn: connection.Connection) -> str:
    sock = socket.socket(fileno=conn.fileno())
    try:
        return str(sock.getpeername()[0])
    except (OSError, IndexError):
        return "?"
    finally:
        sock.detach()


# Errors of accept() that mean the listening socket is gone: stop accepting.
_LISTENER_GONE = (errno.EBADF, errno.EINVAL, errno.ENOTSOCK)
# Other failed accepts in a row (a connection reset before it was accepted,
# a network error passed on) before the accepting thread pauses anyway.
_ACCEPT_FAILURES_BEFORE_PAUSE = 16


class ManagerServer(Server):
    """The manager server with a deep backlog, the market installed, one serving thread.

    The accepting thread hands each new connection to a short-lived thread
    for the authentication handshake (blocking code of the standard library,
    bounded here by ``HANDSHAKE_TIMEOUT``); an authenticated
    ``accept_connection`` is then answered and served by the
    ``ConnectionLoop``, on one thread for all connections (see
    ``mpmarket.net.loop``). Only ``accept_connection`` (and, for a local
    run's server, ``shutdown``) may start a connection; no fallback methods
    (``#GETVALUE`` would try to pickle the market itself).

    Out of descriptors (accept fails), threads (a handshake thread cannot
    start) or memory, the accepting thread pauses (``Backoff``) and retries:
    pending connections wait in the listen backlog, a connection it cannot
    serve is closed before anything tells it it is in, and ``shortages``
    logs one line per episode.
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
        max_request_size: int = DEFAULT_MAX_REQUEST_SIZE,
        tls: ServerTLS | None = None,
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
        self.max_request_size = max_request_size
        self.tls = tls if tls is not None else _hosted_tls  # None: plaintext
        self.stop_event = threading.Event()  # serve_forever sets it again; harmless
        self.session = Session()
        self.shortages = Shortages()
        self.loop = ConnectionLoop(
            market, max_request_size=max_request_size, shortages=self.shortages
        )
        self._client_keys = itertools.count(1)

    def accepter(self) -> None:
        """Start the serving loop, then accept connections until the listener is gone."""
        backoff = Backoff()
        while not self._start(self.loop.run, "market-loop"):
            backoff.pause()
        backoff.reset()
        failures = 0
        listening = self.listening_socket()
        while True:
            if self.shortages.active() and not self._ready(listening):
                continue  # idle meanwhile: checked whether the resource came back
            try:
                conn = self.listener.accept()
            except (OSError, MemoryError) as error:
                if isinstance(error, OSError) and error.errno in _LISTENER_GONE:
                    return  # closed under us: never spin on it
                failures += 1
                if resource_of(error) is not None:
                    self.shortages.hit(error, "accepting paused until it comes back")
                    backoff.pause()
                elif failures >= _ACCEPT_FAILURES_BEFORE_PAUSE:
                    backoff.pause()
                continue
            failures = 0
            if not self._start(self._handshake, "handshake", conn):
                conn.close()  # refused before the handshake: its client tries again
                backoff.pause()
                continue
            backoff.reset()
            self.shortages.ok()

    def _ready(self, listening: socket.socket) -> bool:
        """While short of something: wait for a connection; if none comes, check.

        An episode ends when the resource served again with no failure for
        ``QUIET_S``; on an idle server nothing would serve, so this tries it
        (a descriptor duplicated, a thread started) and ends the episode if
        it works.
        """
        try:
            if select.select([listening], [], [], QUIET_S)[0]:
                return True
        except (OSError, ValueError):  # the listener is gone: accept() says so
            return True
        for resource in self.shortages.active():
            try:
                if resource == "file descriptors":
                    os.close(os.dup(listening.fileno()))
                elif resource == "threads":
                    threading.Thread(target=int, name="probe", daemon=True).start()
            except (OSError, RuntimeError, MemoryError) as error:
                self.shortages.hit(error, "still")
                continue
            self.shortages.ok(resource)
        return False

    def _start(self, target: Any, name: str, *args: Any) -> bool:
        """Start a daemon thread; False (and a line per episode) if none can start."""
        try:
            threading.Thread(target=target, args=args, name=name, daemon=True).start()
        except (RuntimeError, MemoryError) as error:
            self.shortages.hit(error, "new connections refused until it comes back")
            return False
        return True

    def _handshake(self, conn: connection.Connection) -> None:
        """Authenticate a new connection and hand it to the loop, or close it.

        Every read is bounded before anything is allocated: the standard
        library's challenge reads take at most 256 bytes, and the request
        that follows (``accept_connection``) at most ``max_request_size``.
        """
        try:
            if self.tls is not None:  # TLS first: the challenge runs inside it
                wrapped = accept_tls(conn, self.tls, HANDSHAKE_TIMEOUT)
                if wrapped is None:
                    return  # refused (plaintext, failed handshake): one line logged
                conn = wrapped
            else:
                conn.__class__ = FastConnection  # accepted as a stock Connection
            set_receive_timeout(conn.fileno(), HANDSHAKE_TIMEOUT)
            connection.deliver_challenge(conn, self.authkey)
            connection.answer_challenge(conn, self.authkey)
            try:
                method = load_request(conn.recv_bytes(self.max_request_size))[1]
            except RefusedPayload as refusal:  # off the allow-list: one line, hang up
                self.loop.refused_payloads += 1
                _log.warning(
                    "mpmarket: server refused a request from a client at %s: %s; "
                    "its connection is closed",
                    _peer_of(conn),
                    refusal,
                )
                conn.send(("#ERROR", refused(refusal)))
                return
            if method not in self.public:
                conn.send(("#TRACEBACK", f"{method!r} unrecognized"))
            elif method == "shutdown":
                self.shutdown(conn)
            else:
                set_receive_timeout(conn.fileno(), 0)
                self._adopt(conn)  # the loop owns its descriptor now
        except Exception as error:  # a failed or timed-out handshake: just drop it
            self.shortages.hit(error, "connections refused until it comes back")
        finally:
            conn.close()  # nothing left to close once adopted

    def _adopt(self, conn: connection.Connection) -> None:
        client = next(self._client_keys)
        self.session.opened(client, _peer_of(conn))
        served: Served = {
            MARKET_IDENT: (self.market, frozenset(EXPOSED)),
            SESSION_IDENT: (SessionOf(self.session, client), frozenset(SESSION_EXPOSED)),
        }
        try:
            self.loop.adopt(
                conn,
                served,
                functools.partial(self.session.closed, client),
                functools.partial(self.session.describe, client),
            )
        except BaseException:
            self.session.closed(client)  # never counted as attached
            raise


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
    then exits with them: a ServedMarket lives as long as its process.
    ``max_request_size`` bounds each request (``mpmarket serve
    --max-request-size``). A third daemon enforces the carts' lease
    (``CART_LEASE_S``); ``released`` lists the carts it gave back.
    """

    def __init__(
        self,
        market: Marketplace,
        address: Address,
        authkey: bytes,
        *,
        cart_lease_s: float = CART_LEASE_S,
        max_request_size: int = DEFAULT_MAX_REQUEST_SIZE,
        tls: ServerTLS | None = None,
    ) -> None:
        self.market = market
        self.cart_lease_s = cart_lease_s
        self.released: list[int] = []
        self._lease_keeper = threading.Thread(
            target=self._keep_leases, name="cart-lease", daemon=True
        )
        self._server = ManagerServer(
            {},
            address,
            authkey,
            "pickle",
            market=market,
            remote_shutdown=False,
            max_request_size=max_request_size,
            tls=tls,
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
    def shortages(self) -> Shortages:
        """The resources the server ran out of: episodes now, failures met so far."""
        return self._server.shortages

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
    tls_files: tuple[Path, Path] | None = None,
) -> MarketManager:
    """Start a server process; the caller must ``shutdown()`` it.

    The server exits by itself if this process dies without shutting it down.
    With ``tls_files`` (certificate, key) it serves TLS only: its clients,
    the manager's own included, need ``mpmarket.net.tls.trust`` for its address.
    """
    manager = MarketManager(address=address, authkey=authkey, ctx=ctx)
    files = None if tls_files is None else (str(tls_files[0]), str(tls_files[1]))
    manager.start(_host_market, (queue_size_per_producer, log, os.getpid(), files))
    return manager
