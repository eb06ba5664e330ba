"""The client side: ``connect()`` gives a ``MarketProxy`` to the market of a server.

What it adds to the stock ``BaseProxy``:

- **One well-known object.** The proxy names the market by its fixed identity
  (``MARKET_IDENT``): one connection with the address and the authkey, no
  ``create`` or ``incref`` round trips.
- **Connect storms.** As the client speaks second in the handshake, a
  connection the server's listener dropped would wait forever for its
  challenge; here every step of the handshake is bounded
  (``HANDSHAKE_TIMEOUT``) and retried until the attach deadline
  (``ATTACH_TIMEOUT``).
- **Named failures.** Transport errors of a proxy (``EOFError``,
  ``ConnectionError``) become ``MarketUnavailableError``, raised from the
  original, and a bad authkey reads "authentication failed for HOST:PORT".
  A server that does not answer within a call's own wait plus
  ``ANSWER_GRACE`` is reported as gone.
- **A hello on attach.** Each connection, right after the handshake, calls
  ``hello`` on the session object with its mpmarket and protocol versions,
  its role and its name: one round trip, once per connection. A server of
  another version is refused with one line naming both.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from multiprocessing import AuthenticationError, connection, managers, process
from typing import Any

from mpmarket import __version__
from mpmarket.core.books import MarketBooks, MarketSnapshot, MarketWaits
from mpmarket.errors import MarketUnavailableError, VersionMismatchError
from mpmarket.net.mp_private import FastConnection, Proxy, dispatch
from mpmarket.net.tls import client_context, refuse_if_tls_only, wrap_client
from mpmarket.net.wire import (
    EXPOSED,
    HANDSHAKE_TIMEOUT,
    MARKET_IDENT,
    MARKET_TYPEID,
    PROTOCOL_VERSION,
    SESSION_IDENT,
    Address,
    AgentInfo,
    format_address,
    set_receive_timeout,
)
from mpmarket.products import Product

__all__ = ["ATTACH_TIMEOUT", "MarketProxy", "connect", "open_connection"]

# How long a worker keeps trying to attach before reporting the server
# unreachable.
ATTACH_TIMEOUT = 30.0

# How long past a call's own wait a server may take to answer before it is
# taken for frozen or gone: long enough for a loaded machine, short enough that
# agents of a dead or stopped server notice within seconds.
ANSWER_GRACE = 5.0
# Waits longer than this are read without a bound beyond it (SO_RCVTIMEO).
ANSWER_WAIT_MAX = 24 * 3600.0


def open_connection(address: Address, authkey: bytes, deadline: float) -> connection.Connection:
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
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # -- TLS (mpmarket.net.tls): wrap before the authkey handshake --------
        context = client_context(address)
        conn: connection.Connection
        if context is not None:
            try:
                conn = wrap_client(sock, context, address[0], where, HANDSHAKE_TIMEOUT)
            except OSError as error:  # cut or timed out: try again
                if time.monotonic() >= deadline:
                    raise MarketUnavailableError(
                        f"cannot reach market at {where}: TLS handshake failed ({error})"
                    ) from error
                continue
            fd = conn.fileno()
        else:
            try:
                refuse_if_tls_only(sock, where)
            except MarketUnavailableError:
                sock.close()
                raise
            sock.setblocking(True)
            fd = sock.detach()
            conn = FastConnection(fd)
        # -- end of TLS -------------------------------------------------------
        set_receive_timeout(fd, HANDSHAKE_TIMEOUT)
        try:
            connection.answer_challenge(conn, authkey)
            connection.deliver_challenge(conn, authkey)
        except AuthenticationError as error:
            conn.close()
            raise MarketUnavailableError(f"authentication failed for {where}") from error
        except (OSError, EOFError) as error:
            conn.close()
            if time.monotonic() >= deadline:
                raise MarketUnavailableError(
                    f"cannot reach market at {where}: handshake failed ({error})"
                ) from error
            continue
        set_receive_timeout(fd, 0)
        return conn


class MarketProxy(Proxy):
    """A Marketplace in the server, with the same methods and exceptions.

    Each thread gets its own connection on its first call. Build it with
    ``connect()``; it is never pickled nor shared across a fork.
    """

    _exposed_ = EXPOSED
    attach_deadline: float = 0.0
    role: str = "client"
    client_name: str | None = None

    def _connect(self) -> None:
        # The stock version has no timeouts; see the module docstring. Proxies
        # of one address share a connection per thread (BaseProxy._tls): a new
        # one replaces, and closes, whatever an earlier proxy left there, so
        # that a server restarted on the same address never sees a stale one.
        self.disconnect()
        deadline = self.attach_deadline or time.monotonic() + ATTACH_TIMEOUT
        conn = open_connection(self._server_address, bytes(self._authkey), deadline)
        name = self.client_name
        if name is None:  # the process's name, and the thread's if not the main one
            name = process.current_process().name
            if threading.current_thread().name != "MainThread":
                name += "|" + threading.current_thread().name
        try:
            dispatch(conn, None, "accept_connection", (name,))
            self._hello(conn, name)
        except BaseException:
            conn.close()
            raise
        self._tls.connection = conn
        self._tls.answer_limit = 0.0  # no read timeout after the handshake

    def _hello(self, conn: connection.Connection, name: str) -> None:
        """Tell the server who we are; refuse a server of another version."""
        where = format_address(self._server_address)
        ours = f"mpmarket {__version__} (protocol {PROTOCOL_VERSION})"
        try:
            server_version, server_protocol = dispatch(
                conn, SESSION_IDENT, "hello", (__version__, PROTOCOL_VERSION, self.role, name)
            )
        except managers.RemoteError:
            raise VersionMismatchError(
                f"version mismatch: this worker runs {ours}, the server at {where} "
                "an older mpmarket without a version check"
            ) from None
        if (server_version, server_protocol) != (__version__, PROTOCOL_VERSION):
            raise VersionMismatchError(
                f"version mismatch: this worker runs {ours}, the server at {where} "
                f"runs mpmarket {server_version} (protocol {server_protocol})"
            )

    def _call(
        self, method: str, args: tuple[Any, ...] = (), wait: Any = 0.0, target: str | None = None
    ) -> Any:
        """One round trip; ``wait`` is how long the market may hold the call.

        BaseManager has no call timeout: a frozen server would hold a caller
        forever. So every connection reads with a timeout of the call's wait
        plus ``ANSWER_GRACE``, set once per change, and a silent server is
        reported as gone.
        """
        conn = self._connection()
        if type(wait) not in (int, float) or not wait >= 0:  # NaN too: the server refuses it
            wait = 0.0
        limit = min(wait, ANSWER_WAIT_MAX) + ANSWER_GRACE
        if self._tls.answer_limit != limit:
            set_receive_timeout(conn.fileno(), limit)
            self._tls.answer_limit = limit
        try:
            if target is not None:  # another well-known object of the server
                return dispatch(conn, target, method, args)
            return self._callmethod(method, args)
        except BlockingIOError as error:  # SO_RCVTIMEO ran out
            self.disconnect()  # a late answer would put the connection out of step
            raise MarketUnavailableError(
                f"the market at {format_address(self._server_address)} did not answer "
                f"within {limit:.0f} s"
            ) from error
        except (EOFError, ConnectionError) as error:
            raise MarketUnavailableError(
                f"lost the market at {format_address(self._server_address)}: {type(error).__name__}"
            ) from error

    def _connection(self) -> connection.Connection:
        conn = getattr(self._tls, "connection", None)
        if conn is None:
            self._connect()
            conn = self._tls.connection
        return conn

    def register_producer(self) -> int:
        return self._call("register_producer")

    def publish(self, producer_id: int, product: Product, timeout: float = 0.0) -> bool:
        return self._call("publish", (producer_id, product, timeout), timeout)

    def new_cart(self) -> int:
        return self._call("new_cart")

    def add_to_cart(self, cart_id: int, product: Product, timeout: float = 0.0) -> bool:
        return self._call("add_to_cart", (cart_id, product, timeout), timeout)

    def add_many(self, cart_id: int, product: Product, quantity: int, timeout: float = 0.0) -> int:
        return self._call("add_many", (cart_id, product, quantity, timeout), timeout)

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

    def snapshot(self) -> MarketSnapshot:
        return self._call("snapshot")

    def release_cart(self, cart_id: int) -> int:
        return self._call("release_cart", (cart_id,))

    def expire_idle_carts(self, idle_s: float) -> list[int]:
        return self._call("expire_idle_carts", (idle_s,))

    def audit(self) -> list[str]:
        return self._call("audit")

    def waits(self) -> MarketWaits:
        return self._call("waits")

    def agents(self) -> tuple[AgentInfo, ...]:
        """The clients attached to the server now (a call to the session object)."""
        return self._call("agents", target=SESSION_IDENT)

    def disconnect(self) -> None:
        """Close this thread's connection, if it has one."""
        conn = getattr(self._tls, "connection", None)
        if conn is not None:
            del self._tls.connection
            conn.close()

    def __repr__(self) -> str:
        return f"<MarketProxy at {format_address(self._server_address)}>"

    __str__ = __repr__  # the stock one asks the server


def connect(
    address: Address,
    authkey: bytes,
    *,
    timeout: float = ATTACH_TIMEOUT,
    role: str = "client",
    name: str | None = None,
) -> MarketProxy:
    """Attach to the market at ``address``: one connection, made right away.

    Retries for up to ``timeout`` seconds while the server is not there yet;
    raises ``MarketUnavailableError`` with one clear line otherwise, and
    ``VersionMismatchError`` if the server runs another version. ``role``
    (producer, consumer, runner, status...) and ``name`` are what ``status``
    shows; without a name, the process's name (an agent's), and the
    thread's after a ``|`` when it is not the main one.
    """
    host, port = address
    token = managers.Token(MARKET_TYPEID, (host, port), MARKET_IDENT)
    proxy = MarketProxy(token, "pickle", authkey=authkey, incref=False, manager_owned=True)
    proxy.role = role
    proxy.client_name = name
    proxy.attach_deadline = time.monotonic() + timeout
    try:
        proxy._connect()
    except (EOFError, ConnectionError) as error:
        raise MarketUnavailableError(
            f"lost the market at {format_address(address)} while attaching: {type(error).__name__}"
        ) from error
    finally:
        proxy.attach_deadline = 0.0
    return proxy
