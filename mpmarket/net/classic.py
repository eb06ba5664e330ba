"""The classic market hosted as the course's design would be: a stock BaseManager server.

Nothing of ``mpmarket.net.server`` and ``loop``: the stock
``multiprocessing.managers.Server``, with a thread per connection, serves one
``ClassicMarket`` (``mpmarket.core.classic``), registered under the typeid
``"market"`` with a callable that returns the server's one instance. A client
attaches the stock way: ``manager.connect()``, then ``manager.market()`` asks
the server to ``create`` a reference and gives a ``ClassicProxy`` (a
``BaseProxy`` subclass whose methods are ``_callmethod`` calls, as an
``AutoProxy``'s are); each of its threads opens a connection of its own on its
first call.

Where the waits sleep: in the agent, client-side. An agent holds a
``ClassicAgent`` over its proxy: a refused ``publish`` or ``add_to_cart``
comes back to the agent's process, which sleeps its republish or retry wait
and calls again. That is the course's code run on a manager as it stands
(its threads sleep, not the market), and it keeps each of the server's calls
short. Sleeping in the server thread of the connection instead would look the
same from outside (that thread serves only this agent) but would save the
round trip of every refused try, which the course's design, run as
processes, pays.

Added, and none of it changes the design: the listener's backlog is deep
(``ClassicServer``: a connect storm no longer strands agents); the server
exits when its run dies (an initializer starts the watch); failures of the
connection are mapped once to ``MarketUnavailableError``; a connection
inherited through a bare fork is not used (``_call``); the runner's own
connection reads with a timeout (``answer_limit``), so that a frozen server
ends a run instead of holding it.
"""

from __future__ import annotations

import os
import time
from multiprocessing import AuthenticationError
from multiprocessing.context import BaseContext
from typing import TYPE_CHECKING, Any

from mpmarket.core.books import MarketBooks, MarketWaits
from mpmarket.core.classic import CLASSIC_OPERATIONS, ClassicAgent, ClassicMarket
from mpmarket.core.workload import ConsumerSpec, ProducerSpec
from mpmarket.errors import MarketUnavailableError
from mpmarket.net.client import ANSWER_GRACE
from mpmarket.net.mp_private import Manager, Proxy, Server
from mpmarket.net.oplog import LogSettings
from mpmarket.net.server import LISTEN_BACKLOG
from mpmarket.net.wire import Address, format_address, set_receive_timeout
from mpmarket.proc.lifeline import exit_when_orphaned
from mpmarket.products import Product

__all__ = [
    "ClassicManager",
    "ClassicProxy",
    "attach_classic_agent",
    "connect_classic",
    "connect_classic_runner",
    "start_classic_server",
]

_hosted: ClassicMarket | None = None


def _host_classic(
    queue_size_per_producer: int, log: LogSettings | None, parent_pid: int | None
) -> None:
    """Create the server's market (a manager initializer); watch the run's pid."""
    global _hosted
    logger = log.open() if log is not None else None
    _hosted = ClassicMarket(queue_size_per_producer, logger=logger)
    if parent_pid is not None:
        exit_when_orphaned(parent_pid)


def _the_market() -> ClassicMarket:
    """The registered callable: every ``create`` refers to the one market."""
    if _hosted is None:
        raise RuntimeError("the classic market server started without a market")
    return _hosted


class ClassicProxy(Proxy):
    """A stock proxy to the served ClassicMarket: one ``_callmethod`` per call."""

    _exposed_ = CLASSIC_OPERATIONS
    answer_limit: float = 0.0  # seconds; 0 reads without a timeout (the stock way)

    if TYPE_CHECKING:  # BaseProxy's: open this thread's connection

        def _connect(self) -> None: ...

    def _call(self, method: str, args: tuple[Any, ...] = ()) -> Any:
        """One round trip, with the connection's failures named once."""
        tls = self._tls
        if getattr(tls, "pid", None) != os.getpid():
            # A bare fork inherits the parent's connection: never write to it.
            tls.__dict__.pop("connection", None)
            tls.pid = os.getpid()
        where = format_address(self._server_address)
        try:
            if self.answer_limit and getattr(tls, "connection", None) is None:
                self._connect()
                set_receive_timeout(tls.connection.fileno(), self.answer_limit)
            return self._callmethod(method, args)
        except BlockingIOError as error:  # the answer limit ran out
            self.disconnect()
            raise MarketUnavailableError(
                f"the market at {where} did not answer within {self.answer_limit:.0f} s"
            ) from error
        except (EOFError, ConnectionError) as error:
            raise MarketUnavailableError(
                f"lost the market at {where}: {type(error).__name__}"
            ) from error

    def register_producer(self) -> int:
        return self._call("register_producer")

    def publish(self, producer_id: int, product: Product) -> bool:
        return self._call("publish", (producer_id, product))

    def new_cart(self) -> int:
        return self._call("new_cart")

    def add_to_cart(self, cart_id: int, product: Product) -> bool:
        return self._call("add_to_cart", (cart_id, product))

    def remove_from_cart(self, cart_id: int, product: Product) -> bool:
        return self._call("remove_from_cart", (cart_id, product))

    def place_order(self, cart_id: int) -> list[Product]:
        return self._call("place_order", (cart_id,))

    def close(self) -> None:
        self._call("close")

    def books(self) -> MarketBooks:
        return self._call("books")

    def audit(self) -> list[str]:
        return self._call("audit")

    def waits(self) -> MarketWaits:
        return self._call("waits")

    def release_cart(self, cart_id: int) -> int:
        return self._call("release_cart", (cart_id,))

    def disconnect(self) -> None:
        """Close this thread's connection, if it has one."""
        conn = getattr(self._tls, "connection", None)
        if conn is not None:
            del self._tls.connection
            conn.close()

    def __repr__(self) -> str:
        return f"<ClassicProxy at {format_address(self._server_address)}>"

    __str__ = __repr__  # the stock one asks the server


class ClassicServer(Server):
    """The stock server, listening with a deep backlog: nothing else changed.

    With the stock backlog (16 up to Python 3.12), course case 10's 250 agents
    attaching at once (five short connections each, the stock way) left some
    waiting for good for a handshake the server never saw: 24 agents did not
    attach within 30 s. mpmarket's server listens the same way.
    """

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.listening_socket().listen(LISTEN_BACKLOG)


class ClassicManager(Manager):
    """A stock BaseManager: its server hosts one ClassicMarket as ``market``."""

    _Server = ClassicServer

    if TYPE_CHECKING:

        def market(self) -> ClassicProxy: ...


ClassicManager.register("market", callable=_the_market, proxytype=ClassicProxy)


def start_classic_server(
    queue_size_per_producer: int,
    *,
    authkey: bytes,
    address: Address = ("127.0.0.1", 0),
    ctx: BaseContext | None = None,
    log: LogSettings | None = None,
) -> ClassicManager:
    """Start the stock server process; the caller must ``shutdown()`` it.

    The server exits by itself if this process dies without shutting it down.
    """
    manager = ClassicManager(address=address, authkey=authkey, ctx=ctx)
    manager.start(_host_classic, (queue_size_per_producer, log, os.getpid()))
    return manager


def connect_classic(
    address: Address, authkey: bytes, *, timeout: float, answer_limit: float = 0.0
) -> ClassicProxy:
    """A proxy to the served market, the stock way: connect, then ``market()``.

    A refused connection is tried again for up to ``timeout`` seconds; then,
    or on a wrong key, ``MarketUnavailableError``. With ``answer_limit``, the
    proxy's connection reads with that timeout (the runner's:
    ``ANSWER_GRACE``).
    """
    where = format_address(address)
    manager = ClassicManager(address=address, authkey=authkey)
    deadline = time.monotonic() + timeout
    while True:
        try:
            manager.connect()
            proxy = manager.market()
            break
        except AuthenticationError as error:
            raise MarketUnavailableError(f"authentication failed for {where}") from error
        except (OSError, EOFError) as error:
            if time.monotonic() >= deadline:
                raise MarketUnavailableError(f"cannot reach market at {where}: {error}") from error
            time.sleep(0.05)
    proxy.answer_limit = answer_limit
    return proxy


def connect_classic_runner(address: Address, authkey: bytes, *, timeout: float) -> ClassicProxy:
    """The runner's proxy: its calls never wait, so a silent server is a lost one."""
    return connect_classic(address, authkey, timeout=timeout, answer_limit=ANSWER_GRACE)


def attach_classic_agent(
    address: Address, authkey: bytes, spec: ProducerSpec | ConsumerSpec, *, timeout: float
) -> ClassicAgent:
    """An agent process's market: its ``ClassicAgent`` over a proxy, sleeping client-side."""
    return ClassicAgent.for_spec(connect_classic(address, authkey, timeout=timeout), spec)
