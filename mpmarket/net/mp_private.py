"""The private parts of ``multiprocessing`` the served market builds on, typed, in one place.

The market server is a ``multiprocessing.managers`` server whose accepting and
serving are replaced (``mpmarket.net.server``); its client is a ``BaseProxy``
whose connecting is replaced (``mpmarket.net.client``). Both reach past the
documented API. Every such reach is declared here with its type, so that the
rest of ``mpmarket.net`` type-checks without ignores, and a new Python version
has one module to read against. Checked against CPython 3.11, 3.12 and 3.13,
where all of these are the same:

- ``connection.Connection._check_closed``, ``_check_writable``,
  ``_check_readable``, ``_send_bytes`` and ``_recv_bytes`` (a ``BytesIO``):
  ``FastConnection.send`` is the stock ``send`` with a plain pickler,
  ``FastConnection.recv`` the stock ``recv`` with the answer allow-list
  (``mpmarket.net.safe_pickle``).
- ``connection.Connection._handle``: the descriptor a Connection owns and
  closes; ``take_handle`` empties it so that a socket object can own the
  descriptor instead, without duplicating it (a ``dup`` needs a descriptor
  more, which a server at its limit does not have).
- ``managers.dispatch(conn, ident, method, args)``: one request and its answer;
  raises ``RemoteError``, or the exception the server sent back.
- ``managers.Server``: the attributes its ``__init__`` sets, ``listener`` (a
  ``connection.Listener`` whose ``_listener._socket`` is the listening socket;
  its backlog is 16 up to 3.12, 128 from 3.13), ``authkey`` and
  ``stop_event``; ``accepter()``, which ``serve_forever`` runs on a thread;
  ``shutdown(conn)``, which answers a shutdown request and stops the process.
- ``managers.BaseManager._Server``, the server class ``_run_server`` builds in
  the server process; ``_Client``, how the manager's own requests (its
  ``shutdown``) connect; ``_process``, the server process ``start()`` made
  (a run watches and, at worst, kills it).
- ``managers.BaseProxy``: ``_token``, ``_authkey``, ``_tls`` (the thread's
  connection, shared by the proxies of one address), ``_connect()`` (which
  ``_callmethod`` calls when the thread has no connection) and ``_callmethod``.
"""

from __future__ import annotations

import io
import pickle
import socket
import threading
from collections.abc import Callable
from multiprocessing import connection, managers
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Any, ClassVar, cast

from mpmarket.net.safe_pickle import load_reply

__all__ = ["FastConnection", "Manager", "Proxy", "Server", "dispatch", "take_handle"]

_TCPAddress = tuple[str, int]


class FastConnection(connection.Connection):
    """A Connection that pickles with plain ``pickle.dumps``, and reads answers safely.

    The stock one builds a ForkingPickler (with its reducers for sockets and
    connections, which market messages never hold) for every message: about
    1.3 us a message against 0.15 us, on both ends of every call. ``recv``,
    which reads the answers of the clients' calls (``managers.dispatch`` and
    ``BaseProxy._callmethod`` both call it), unpickles with the answer
    allow-list: a server that sends anything but the market's own types is
    refused with ``UnsafeReplyError`` (the server reads its requests with
    ``recv_bytes`` and its own allow-list).
    """

    if TYPE_CHECKING:  # defined by connection._ConnectionBase / Connection

        def _check_closed(self) -> None: ...
        def _check_readable(self) -> None: ...
        def _check_writable(self) -> None: ...
        def _send_bytes(self, buf: bytes) -> None: ...
        def _recv_bytes(self, maxsize: int | None = None) -> io.BytesIO: ...

    def send(self, obj: Any) -> None:
        self._check_closed()
        self._check_writable()
        self._send_bytes(pickle.dumps(obj, pickle.HIGHEST_PROTOCOL))

    def recv(self) -> Any:
        self._check_closed()
        self._check_readable()
        return load_reply(self._recv_bytes().getbuffer())


def take_handle(conn: connection.Connection) -> int:
    """The descriptor of ``conn``, which no longer owns it (nor closes it)."""
    fd = conn.fileno()
    cast(Any, conn)._handle = None
    return fd


_dispatch: Callable[..., Any] = managers.dispatch  # type: ignore[attr-defined]


def dispatch(
    conn: connection.Connection, ident: str | None, method: str, args: tuple[Any, ...] = ()
) -> Any:
    """Send one request to a manager server and return its answer (``managers.dispatch``)."""
    return _dispatch(conn, ident, method, args)


class Server(managers.Server):
    """``managers.Server`` with what its ``__init__`` sets declared (TCP addresses only)."""

    address: _TCPAddress
    listener: connection.Listener
    authkey: bytes
    stop_event: threading.Event

    def listening_socket(self) -> socket.socket:
        """The listener's socket: the stock Listener takes no backlog past its own."""
        return cast(Any, self.listener)._listener._socket


class Manager(managers.BaseManager):
    """``managers.BaseManager`` with its private hooks and attributes declared.

    ``_Server``: the server class its server process runs. ``_Client``: called
    as ``_Client(address, authkey=key)`` for the manager's own requests.
    ``_process``: the server process, once started. Addresses are TCP ones.
    """

    _Server: ClassVar[type[managers.Server]]
    _Client: Callable[..., connection.Connection]
    _process: BaseProcess

    if TYPE_CHECKING:

        @property
        def address(self) -> _TCPAddress: ...


class Proxy(managers.BaseProxy):
    """``managers.BaseProxy`` with what its ``__init__`` sets declared."""

    _token: managers.Token
    _authkey: bytes
    _tls: threading.local  # stock: shared by the proxies of one address; MarketProxy's own

    @property
    def _server_address(self) -> _TCPAddress:
        """The (host, port) of the server, from the token the proxy was made with."""
        return cast(_TCPAddress, self._token.address)
