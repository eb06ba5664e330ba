"""The market server: one Marketplace hosted by a ``BaseManager`` process.

This is the only module that touches ``multiprocessing.managers``. It adds
these to the stock manager:

- **One serving thread.** Authenticated connections are served by one
  event loop (``mpmarket.net.loop``) instead of a thread each; calls that wait
  are parked in the market and answered when complete. Same wire format.

- **One well-known object.** The server installs its Marketplace under the
  fixed identity ``"market"`` when it starts, so a worker attaches with just
  the address and the authkey: one connection, no ``create`` or ``incref``
  round trips, and nothing else is reachable (no registered typeids).
- **Connect storms.** The stock listener has a backlog of 16; hundreds of
  agents connecting at once overflow it and, as the client speaks second in
  the handshake, some of them wait forever for a challenge that never comes.
  The server listens with a deep backlog, runs each handshake on a short-lived
  thread bounded by a timeout, and clients bound every step of theirs too,
  retrying until their attach deadline.
- **Named failures.** Transport errors of a proxy (``EOFError``,
  ``ConnectionError``) become ``MarketUnavailableError``, raised from the
  original, and a bad authkey reads "authentication failed for HOST:PORT".
- **A hello on attach.** Each connection, right after the handshake, calls
  ``hello`` on a second well-known object (``"session"``) with its mpmarket
  and protocol versions, its role and its name: one round trip, once per
  connection. A worker of another version is refused with one line naming
  both; the server keeps the attached clients for ``mpmarket status``.
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
import ipaddress
import itertools
import os
import pickle
import secrets
import socket
import struct
import threading
import time
from dataclasses import dataclass
from multiprocessing import connection, managers, process
from multiprocessing.context import BaseContext
from typing import Any, ClassVar

from mpmarket import __version__
from mpmarket.core.books import MarketBooks, MarketSnapshot, MarketWaits
from mpmarket.core.market import Marketplace
from mpmarket.errors import MarketUnavailableError, VersionMismatchError
from mpmarket.net.loop import ConnectionLoop, Served
from mpmarket.net.oplog import LogSettings
from mpmarket.proc.lifeline import PARENT_CHECK_INTERVAL, Lifeline
from mpmarket.products import Product

__all__ = [
    "DEFAULT_PORT",
    "PROTOCOL_VERSION",
    "Address",
    "AgentInfo",
    "MarketManager",
    "MarketProxy",
    "ServedMarket",
    "connect",
    "format_address",
    "is_loopback",
    "new_authkey",
    "parse_address",
    "start_server",
]

Address = tuple[str, int]

MARKET_IDENT = "market"
MARKET_TYPEID = "Marketplace"
SESSION_IDENT = "session"

# The port ``mpmarket serve`` listens on unless told otherwise.
DEFAULT_PORT = 7151

# What goes over the wire: the exposed methods, their arguments and results.
# Raise it on any change of those; a worker and a server must agree on it
# (and on the mpmarket version) to attach.
PROTOCOL_VERSION = 1

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
    "release_cart",
    "expire_idle_carts",
    "audit",
    "waits",
    "snapshot",
)
SESSION_EXPOSED = ("hello", "agents")


# How long past a call's own wait a server may take to answer before it is
# taken for frozen or gone: long enough for a loaded machine, short enough that
# agents of a dead or stopped server notice within seconds.
ANSWER_GRACE = 5.0
# Waits longer than this are read without a bound beyond it (SO_RCVTIMEO).
ANSWER_WAIT_MAX = 24 * 3600.0


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


def is_loopback(host: str) -> bool:
    """True when every address ``host`` names is a loopback one (127.0.0.0/8, ::1).

    A name is resolved (no query leaves the machine for ``localhost`` or an
    address); one that does not resolve counts as not loopback.
    """
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return False
    return bool(infos) and all(
        ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in infos
    )


@dataclass(frozen=True)
class AgentInfo:
    """A client attached to the server: what its hello said, and since when."""

    name: str
    role: str  # "producer", "consumer", "runner", "status" or another client
    host: str  # the peer's address as the server sees it
    attached_s: float  # seconds since its hello, when asked


class _FastConnection(connection.Connection):
    """A Connection that pickles with plain ``pickle.dumps``.

    The stock one builds a ForkingPickler (with its reducers for sockets and
    connections, which market messages never hold) for every message: about
    1.3 us a message against 0.15 us, on both ends of every call.
    """

    def send(self, obj: Any) -> None:
        self._check_closed()
        self._check_writable()
        self._send_bytes(pickle.dumps(obj, pickle.HIGHEST_PROTOCOL))


# -- the server side -----------------------------------------------------------

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
    ) -> tuple:
        """Record the client if its versions match ours; return ours either way."""
        ours = (__version__, PROTOCOL_VERSION)
        with self._lock:
            if (version, protocol) != ours:
                self.refused += 1
                return ours
            peer = self._peers.get(client, "?")
            self._clients[client] = (str(name)[:100], str(role)[:20], peer, time.monotonic())
        return ours

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

    def hello(self, version: object, protocol: object, role: object, name: object) -> tuple:
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


class _MarketServer(managers.Server):
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

    public: ClassVar[list[str]] = ["accept_connection", "shutdown"]
    fallback_mapping: ClassVar[dict[str, Any]] = {}

    def __init__(
        self,
        registry: dict,
        address: Address,
        authkey: bytes,
        serializer: str,
        *,
        market: Marketplace | None = None,
        remote_shutdown: bool = True,
    ) -> None:
        super().__init__(registry, address, authkey, serializer)
        # The stock Listener takes no backlog argument past 16: listen() again.
        self.listener._listener._socket.listen(LISTEN_BACKLOG)
        market = market if market is not None else _hosted_market
        if market is None:
            raise RuntimeError("the market server started without a market")
        if not remote_shutdown:
            self.public = ["accept_connection"]
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
            conn.__class__ = _FastConnection  # accepted as a stock Connection
            _set_receive_timeout(conn.fileno(), HANDSHAKE_TIMEOUT)
            connection.deliver_challenge(conn, self.authkey)
            connection.answer_challenge(conn, self.authkey)
            method = conn.recv()[1]
            if method not in self.public:
                conn.send(("#TRACEBACK", f"{method!r} unrecognized"))
            elif method == "shutdown":
                self.shutdown(conn)
            else:
                conn.send(("#RETURN", None))
                _set_receive_timeout(conn.fileno(), 0)
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
        self._server = _MarketServer(
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


class MarketManager(managers.BaseManager):
    """A BaseManager whose server hosts one Marketplace under a known identity.

    Its own requests (``shutdown``) go through ``_open_connection``: the stock
    client does not set TCP_NODELAY, and its shutdown request waited 40 ms
    on the server's delayed ACK, at the end of every run.
    """

    _Server = _MarketServer

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._Client = _manager_client


def _manager_client(address: Address, authkey: bytes) -> connection.Connection:
    return _open_connection(address, authkey, time.monotonic() + HANDSHAKE_TIMEOUT)


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
        conn = _FastConnection(fd)
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
    role: str = "client"
    client_name: str | None = None

    def _connect(self) -> None:
        # The stock version has no timeouts; see the module docstring. Proxies
        # of one address share a connection per thread (BaseProxy._tls): a new
        # one replaces, and closes, whatever an earlier proxy left there, so
        # that a server restarted on the same address never sees a stale one.
        self.disconnect()
        deadline = self.attach_deadline or time.monotonic() + ATTACH_TIMEOUT
        conn = _open_connection(self._token.address, bytes(self._authkey), deadline)
        name = self.client_name
        if name is None:  # the process's name, and the thread's if not the main one
            name = process.current_process().name
            if threading.current_thread().name != "MainThread":
                name += "|" + threading.current_thread().name
        try:
            managers.dispatch(conn, None, "accept_connection", (name,))
            self._hello(conn, name)
        except BaseException:
            conn.close()
            raise
        self._tls.connection = conn
        self._tls.answer_limit = 0.0  # no read timeout after the handshake

    def _hello(self, conn: connection.Connection, name: str) -> None:
        """Tell the server who we are; refuse a server of another version."""
        where = format_address(self._token.address)
        ours = f"mpmarket {__version__} (protocol {PROTOCOL_VERSION})"
        try:
            server_version, server_protocol = managers.dispatch(
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
            _set_receive_timeout(conn.fileno(), limit)
            self._tls.answer_limit = limit
        try:
            if target is not None:  # another well-known object of the server
                return managers.dispatch(conn, target, method, args)
            return self._callmethod(method, args)
        except BlockingIOError as error:  # SO_RCVTIMEO ran out
            self.disconnect()  # a late answer would put the connection out of step
            raise MarketUnavailableError(
                f"the market at {format_address(self._token.address)} did not answer "
                f"within {limit:.0f} s"
            ) from error
        except (EOFError, ConnectionError) as error:
            raise MarketUnavailableError(
                f"lost the market at {format_address(self._token.address)}: {type(error).__name__}"
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
        return f"<MarketProxy at {format_address(self._token.address)}>"

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
    token = managers.Token(MARKET_TYPEID, tuple(address), MARKET_IDENT)
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
