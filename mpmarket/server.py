"""The market server: one Marketplace hosted by a ``BaseManager`` process.

This is the only module that touches ``multiprocessing.managers``. It adds
three things to the stock manager:

- **One well-known object.** The server installs its Marketplace under the
  fixed identity ``"market"`` when it starts, so a worker attaches with just
  the address and the authkey: one connection, no ``create`` or ``incref``
  round trips, and nothing else is reachable (no registered typeids).
- **Connect storms.** The stock listener has a backlog of 16; hundreds of
  agents connecting at once overflow it and, as the client speaks second in
  the handshake, some of them wait forever for a challenge that never comes.
  The server listens with a deep backlog and clients bound every step of the
  handshake with a timeout, retrying until their attach deadline.
- **Named failures.** Transport errors of a proxy (``EOFError``,
  ``ConnectionError``) become ``MarketUnavailableError``, raised from the
  original, and a bad authkey reads "authentication failed for HOST:PORT".

BaseManager speaks pickle: whoever holds the authkey can run code in the
server. The key is a secret: generated per run (``new_authkey``) or read from
a file or the environment, never a constant, never logged.
"""

from __future__ import annotations

import os
import secrets
import socket
import struct
import threading
import time
from multiprocessing import connection, managers, process
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import Any

from mpmarket.errors import MarketUnavailableError
from mpmarket.lifeline import Lifeline
from mpmarket.marketplace import MarketBooks, Marketplace
from mpmarket.oplog import operation_logger
from mpmarket.products import Product

__all__ = [
    "Address",
    "MarketManager",
    "MarketProxy",
    "connect",
    "format_address",
    "new_authkey",
    "parse_address",
    "start_server",
]

Address = tuple[str, int]

MARKET_IDENT = "market"
MARKET_TYPEID = "Marketplace"

# Pending connections the listener queues. 16 (the stock value) overflows
# when hundreds of agents attach together; the kernel caps it at somaxconn.
LISTEN_BACKLOG = 4096

# How long one TCP connect plus authentication handshake may take before the
# client gives up on that try and connects again. Short enough to recover
# quickly from a dropped connection, long enough for a loaded 2-core machine.
HANDSHAKE_TIMEOUT = 5.0

# How long a worker keeps trying to attach before reporting the server
# unreachable.
ATTACH_TIMEOUT = 30.0

EXPOSED = (
    "register_producer",
    "publish",
    "new_cart",
    "add_to_cart",
    "add_many",
    "remove_from_cart",
    "remove_many",
    "place_order",
    "close",
    "books",
)


def new_authkey() -> bytes:
    """A fresh random authkey for one run."""
    return secrets.token_bytes(32)


def format_address(address: Address) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_address(text: str) -> Address:
    """``HOST:PORT`` (or ``[IPv6]:PORT``) to an address tuple; ValueError if bad."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


# -- the server side -----------------------------------------------------------

_hosted_market: Marketplace | None = None


# How often a server started by a run checks that the run is still alive. A
# server whose run was killed exits on its own, and its agents with it.
PARENT_CHECK_INTERVAL = 0.5


def _host_market(
    queue_size_per_producer: int, log_file: str | None, parent_pid: int | None = None
) -> None:
    """Create the market of this server process (a manager initializer)."""
    global _hosted_market
    logger = operation_logger(log_file) if log_file else None
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


class _MarketServer(managers.Server):
    """The stock manager server with a deep backlog and the market installed."""

    def __init__(self, registry: dict, address: Address, authkey: bytes, serializer: str) -> None:
        super().__init__(registry, address, authkey, serializer)
        # The stock Listener takes no backlog argument past 16: listen() again.
        self.listener._listener._socket.listen(LISTEN_BACKLOG)
        if _hosted_market is None:
            raise RuntimeError("the market server started without a market")
        self.id_to_obj[MARKET_IDENT] = (_hosted_market, set(EXPOSED), None)


class MarketManager(managers.BaseManager):
    """A BaseManager whose server hosts one Marketplace under a known identity."""

    _Server = _MarketServer


def start_server(
    queue_size_per_producer: int,
    *,
    authkey: bytes,
    address: Address = ("127.0.0.1", 0),
    ctx: BaseContext | None = None,
    log_file: str | Path | None = None,
) -> MarketManager:
    """Start a server process; the caller must ``shutdown()`` it.

    The server exits by itself if this process dies without shutting it down.
    """
    manager = MarketManager(address=address, authkey=authkey, ctx=ctx)
    log = str(log_file) if log_file else None
    manager.start(_host_market, (queue_size_per_producer, log, os.getpid()))
    return manager


# -- the client side -----------------------------------------------------------


def _set_receive_timeout(fd: int, seconds: float) -> None:
    """Bound (or, with 0, unbound) blocking reads on a connected socket."""
    sock = socket.socket(fileno=fd)
    try:
        whole = int(seconds)
        timeval = struct.pack("ll", whole, int((seconds - whole) * 1_000_000))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
    finally:
        sock.detach()


def _open_connection(address: Address, authkey: bytes, deadline: float) -> connection.Connection:
    """Connect and authenticate, each try bounded, retrying until ``deadline``."""
    where = format_address(address)
    while True:
        try:
            sock = socket.create_connection(address, timeout=HANDSHAKE_TIMEOUT)
        except OSError as error:
            if time.monotonic() >= deadline:
                reason = os.strerror(error.errno) if error.errno else str(error)
                raise MarketUnavailableError(
                    f"cannot reach market at {where}: {reason.lower()}"
                ) from error
            time.sleep(0.05)
            continue
        sock.setblocking(True)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        fd = sock.detach()
        _set_receive_timeout(fd, HANDSHAKE_TIMEOUT)
        conn = connection.Connection(fd)
        try:
            connection.answer_challenge(conn, authkey)
            connection.deliver_challenge(conn, authkey)
        except connection.AuthenticationError as error:
            conn.close()
            raise MarketUnavailableError(f"authentication failed for {where}") from error
        except (OSError, EOFError) as error:
            conn.close()
            if time.monotonic() >= deadline:
                raise MarketUnavailableError(
                    f"cannot reach market at {where}: handshake failed ({error})"
                ) from error
            continue
        _set_receive_timeout(fd, 0)
        return conn


class MarketProxy(managers.BaseProxy):
    """A Marketplace in the server, with the same methods and exceptions.

    Each thread gets its own connection on its first call. Build it with
    ``connect()``; it is never pickled nor shared across a fork.
    """

    _exposed_ = EXPOSED
    attach_deadline: float = 0.0

    def _connect(self) -> None:
        # The stock version has no timeouts; see the module docstring. Proxies
        # of one address share a connection per thread (BaseProxy._tls): a new
        # one replaces, and closes, whatever an earlier proxy left there, so
        # that a server restarted on the same address never sees a stale one.
        self.disconnect()
        deadline = self.attach_deadline or time.monotonic() + ATTACH_TIMEOUT
        conn = _open_connection(self._token.address, bytes(self._authkey), deadline)
        name = process.current_process().name
        if threading.current_thread().name != "MainThread":
            name += "|" + threading.current_thread().name
        managers.dispatch(conn, None, "accept_connection", (name,))
        self._tls.connection = conn

    def _call(self, method: str, args: tuple[Any, ...] = ()) -> Any:
        try:
            return self._callmethod(method, args)
        except (EOFError, ConnectionError) as error:
            raise MarketUnavailableError(
                f"lost the market at {format_address(self._token.address)}: {type(error).__name__}"
            ) from error

    def register_producer(self) -> int:
        return self._call("register_producer")

    def publish(self, producer_id: int, product: Product, timeout: float = 0.0) -> bool:
        return self._call("publish", (producer_id, product, timeout))

    def new_cart(self) -> int:
        return self._call("new_cart")

    def add_to_cart(self, cart_id: int, product: Product, timeout: float = 0.0) -> bool:
        return self._call("add_to_cart", (cart_id, product, timeout))

    def add_many(self, cart_id: int, product: Product, quantity: int, timeout: float = 0.0) -> int:
        return self._call("add_many", (cart_id, product, quantity, timeout))

    def remove_from_cart(self, cart_id: int, product: Product) -> bool:
        return self._call("remove_from_cart", (cart_id, product))

    def remove_many(self, cart_id: int, product: Product, quantity: int) -> int:
        return self._call("remove_many", (cart_id, product, quantity))

    def place_order(self, cart_id: int) -> list[Product]:
        return self._call("place_order", (cart_id,))

    def close(self) -> None:
        self._call("close")

    def books(self) -> MarketBooks:
        return self._call("books")

    def disconnect(self) -> None:
        """Close this thread's connection, if it has one."""
        conn = getattr(self._tls, "connection", None)
        if conn is not None:
            del self._tls.connection
            conn.close()

    def __repr__(self) -> str:
        return f"<MarketProxy at {format_address(self._token.address)}>"


def connect(address: Address, authkey: bytes, *, timeout: float = ATTACH_TIMEOUT) -> MarketProxy:
    """Attach to the market at ``address``: one connection, made right away.

    Retries for up to ``timeout`` seconds while the server is not there yet;
    raises ``MarketUnavailableError`` with one clear line otherwise.
    """
    token = managers.Token(MARKET_TYPEID, tuple(address), MARKET_IDENT)
    proxy = MarketProxy(token, "pickle", authkey=authkey, incref=False, manager_owned=True)
    proxy.attach_deadline = time.monotonic() + timeout
    try:
        proxy._connect()
    finally:
        proxy.attach_deadline = 0.0
    return proxy
