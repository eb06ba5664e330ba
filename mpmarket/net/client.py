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
  another version is refused with one line naming both. The answer carries
  the market's identity, a random id its server made when it started.
- **Never another call's answer.** Answers come in order, one request at a
  time, so a call interrupted between its request and its whole answer
  (Ctrl-C, a signal handler's exception, a timeout, a partial read, an answer
  that does not unpickle or has the wrong shape or type) drops its
  connection: the call raises (the caller's own exception as it is, the
  transport's as ``MarketUnavailableError``) and the next call connects again,
  once. Nothing is sent twice: an interrupted add may have put units in the
  cart (``place_order`` returns them, or the lease gives them back). A hello
  naming another market than the first (a server restarted on the address)
  raises ``MarketChangedError``: ids belong to one market.
- **Threads, signal handlers, forks.** Each thread has its own connection,
  the proxy's own (never shared with another proxy). A call from a signal
  handler while its thread's call waits is refused (``RuntimeError``); a
  forked child's first call makes its own connection; a proxy does not pickle.
"""

from __future__ import annotations

import os
import pickle
import socket
import threading
import time
from multiprocessing import AuthenticationError, connection, managers, process
from typing import Any, NoReturn, get_origin, get_type_hints

from mpmarket import __version__
from mpmarket.core.books import MarketBooks, MarketSnapshot, MarketWaits
from mpmarket.errors import (
    MarketChangedError,
    MarketUnavailableError,
    UnsafeReplyError,
    VersionMismatchError,
)
from mpmarket.net.mp_private import FastConnection, Proxy, dispatch
from mpmarket.net.safe_pickle import load_reply
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

_dumps = pickle.dumps
_PROTOCOL = pickle.HIGHEST_PROTOCOL


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
        except BaseException:  # Ctrl-C mid-handshake, say: never leak the socket
            conn.close()
            raise
        set_receive_timeout(fd, 0)
        return conn


class MarketProxy(Proxy):
    """A Marketplace in the server, with the same methods and exceptions.

    Each thread gets its own connection on its first call. Build it with
    ``connect()``; it is never pickled nor shared across a fork (a forked
    child's first call makes its own connection). See the module docstring
    for what happens to a call interrupted before its answer.
    """

    _exposed_ = EXPOSED
    attach_deadline: float = 0.0
    role: str = "client"
    client_name: str | None = None
    market_id: str | None = None  # the identity of the market of the first hello

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The stock proxy shares each thread's connection with every proxy of
        # the same address: one of them reconnecting (to a restarted server,
        # say) would move the others to another market unseen. Its own, here.
        self._tls = threading.local()

    def __reduce__(self) -> NoReturn:
        raise TypeError(
            "a MarketProxy cannot be pickled: call mpmarket.connect() in the other process"
        )

    def _connect(self) -> None:
        # The stock version has no timeouts; see the module docstring. A new
        # connection replaces, and closes, whatever this thread had.
        tls = self._tls
        reconnect = getattr(tls, "dropped", False)
        self.disconnect()
        if reconnect:  # after a dropped connection: one try, and say so if it fails
            deadline = time.monotonic()
        else:
            deadline = self.attach_deadline or time.monotonic() + ATTACH_TIMEOUT
        conn = open_connection(self._server_address, bytes(self._authkey), deadline)
        name = self.client_name
        if name is None:  # the process's name, and the thread's if not the main one
            name = process.current_process().name
            if threading.current_thread().name != "MainThread":
                name += "|" + threading.current_thread().name
        try:
            dispatch(conn, None, "accept_connection", (name,))
            self._check_market(self._hello(conn, name))
        except BaseException:
            conn.close()
            raise
        tls.connection = conn
        tls.pid = os.getpid()
        tls.dropped = False
        tls.answer_limit = 0.0  # no read timeout after the handshake

    def _hello(self, conn: connection.Connection, name: str) -> object:
        """Tell the server who we are; refuse a server of another version.

        Returns the identity of the server's market, as the hello answered it.
        """
        where = format_address(self._server_address)
        ours = f"mpmarket {__version__} (protocol {PROTOCOL_VERSION})"
        try:
            answer = dispatch(
                conn, SESSION_IDENT, "hello", (__version__, PROTOCOL_VERSION, self.role, name)
            )
        except managers.RemoteError:
            raise VersionMismatchError(
                f"version mismatch: this worker runs {ours}, the server at {where} "
                "an older mpmarket without a version check"
            ) from None
        if type(answer) is not tuple or len(answer) < 2:
            raise VersionMismatchError(
                f"version mismatch: this worker runs {ours}, the server at {where} "
                f"answered its hello with {_describe(answer)}"
            )
        server_version, server_protocol = answer[:2]
        if (server_version, server_protocol) != (__version__, PROTOCOL_VERSION):
            raise VersionMismatchError(
                f"version mismatch: this worker runs {ours}, the server at {where} "
                f"runs mpmarket {server_version} (protocol {server_protocol})"
            )
        return answer[2] if len(answer) == 3 else None

    def _check_market(self, market_id: object) -> None:
        """Refuse a connection to another market than the one of the first hello."""
        where = format_address(self._server_address)
        if type(market_id) is not str or not market_id:
            raise MarketUnavailableError(
                f"the server at {where} did not say which market it serves"
            )
        if self.market_id is None:
            self.market_id = market_id
        elif market_id != self.market_id:
            raise MarketChangedError(
                f"the market at {where} is not the one this proxy attached to (its server "
                "restarted): its carts and producers are gone; connect again"
            )

    def _call(
        self, method: str, args: tuple[Any, ...] = (), wait: Any = 0.0, target: str | None = None
    ) -> Any:
        """One round trip; ``wait`` is how long the market may hold the call.

        BaseManager has no call timeout: a frozen server would hold a caller
        forever. So every connection reads with a timeout of the call's wait
        plus ``ANSWER_GRACE``, set once per change, and a silent server is
        reported as gone. Whatever interrupts the call between its request
        and its whole answer drops the connection (see the module docstring).
        """
        tls = self._tls
        if getattr(tls, "busy", False) and getattr(tls, "pid", None) == os.getpid():
            raise RuntimeError(
                f"MarketProxy.{method}() called while a call of this thread waits for its "
                "answer (from a signal handler?): one call at a time per thread"
            )
        conn = self._connection()
        if type(wait) not in (int, float) or not wait >= 0:  # NaN too: the server refuses it
            wait = 0.0
        limit = min(wait, ANSWER_WAIT_MAX) + ANSWER_GRACE
        if tls.answer_limit != limit:
            set_receive_timeout(conn.fileno(), limit)
            tls.answer_limit = limit
        # Pickled before anything is sent: an argument that does not pickle
        # fails here, with the connection still in step.
        request = _dumps((target or self._token.id, method, args, {}), _PROTOCOL)
        tls.busy = True
        try:
            conn.send_bytes(request)
            data = conn.recv_bytes()
        except BaseException as error:
            # Whatever it was (the transport, Ctrl-C, a signal handler's own
            # exception), a late answer would be taken for the next call's.
            self._drop()
            if _from_transport(error):
                raise self._transport_error(limit, error) from error
            raise  # the caller's own: KeyboardInterrupt, SystemExit, a test's timeout
        finally:
            tls.busy = False
        try:
            answer = load_reply(data)  # only the market's own types (net.safe_pickle)
        except UnsafeReplyError:
            self._drop()  # a server that sends such things is not talked to on this line
            raise
        except Exception as error:  # a corrupt pickle
            self._drop()
            raise MarketUnavailableError(
                f"the answer of the market at {format_address(self._server_address)} to "
                f"{method} could not be read ({type(error).__name__}); the connection was dropped"
            ) from error
        return self._result(method, answer)

    def _transport_error(self, limit: float, error: BaseException) -> Exception:
        where = format_address(self._server_address)
        if isinstance(error, BlockingIOError):  # SO_RCVTIMEO ran out
            return MarketUnavailableError(
                f"the market at {where} did not answer within {limit:.0f} s"
            )
        return MarketUnavailableError(f"lost the market at {where}: {type(error).__name__}")

    def _result(self, method: str, answer: object) -> Any:
        """The result of a complete answer, or its exception; a wrong shape drops the connection."""
        if type(answer) is tuple and len(answer) == 2:
            kind, result = answer
            if kind == "#RETURN" and _fits(result, _RESULT_TYPES.get(method, object)):
                return result
            if kind == "#ERROR" and isinstance(result, Exception):
                raise result
            if kind in ("#TRACEBACK", "#UNSERIALIZABLE") and isinstance(result, str):
                raise managers.convert_to_error(kind, result)  # type: ignore[attr-defined]
        self._drop()
        raise MarketUnavailableError(
            f"the market at {format_address(self._server_address)} answered {method} with "
            f"{_describe(answer)}; the connection was dropped"
        )

    def _callmethod(
        self, methodname: str, args: tuple[Any, ...] = (), kwds: dict[str, Any] | None = None
    ) -> Any:
        """The stock entry point, through ``_call`` and its guards (no keyword arguments)."""
        if kwds:
            raise TypeError("MarketProxy calls take no keyword arguments over the wire")
        return self._call(methodname, tuple(args))

    def _connection(self) -> connection.Connection:
        tls = self._tls
        conn = getattr(tls, "connection", None)
        if conn is not None and tls.pid != os.getpid():
            # Inherited through a fork: the parent's connection. Never write to
            # it; closing our copy of the descriptor leaves the parent's open.
            del tls.connection
            tls.busy = False
            conn.close()
            conn = None
        if conn is None:
            self._connect()
            conn = tls.connection
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

    def _drop(self) -> None:
        """Close a connection that may be out of step; the next call connects again, once."""
        self._tls.dropped = True
        self.disconnect()

    def __repr__(self) -> str:
        return f"<MarketProxy at {format_address(self._server_address)}>"

    __str__ = __repr__  # the stock one asks the server


# What each call returns, from the annotations of the proxy's methods: an
# answer of another type cannot be this call's.
_RESULT_TYPES: dict[str, type] = {
    name: get_origin(hint) or hint
    for name in (*EXPOSED, "agents")
    for hint in [get_type_hints(getattr(MarketProxy, name))["return"]]
}


def _from_transport(error: BaseException) -> bool:
    """Raised by the socket or the framing, not by a signal handler of the caller's.

    The socket's errors carry an errno; the framing's (``got end of file during
    message``, ``bad message length``) are plain OSErrors or EOFError. A
    handler's ``TimeoutError()`` has neither, and stays the caller's.
    """
    if isinstance(error, EOFError):
        return True
    return isinstance(error, OSError) and (bool(error.errno) or type(error) is OSError)


def _fits(result: object, expected: type) -> bool:
    # bool is an int to isinstance; a count is never a bool, nor a bool a count.
    if expected is int or expected is bool:
        return type(result) is expected
    return isinstance(result, expected)


def _describe(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


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
