"""TLS for the served market: contexts, the wrapped connection, and its errors.

``mpmarket serve --tls-cert FILE --tls-key FILE`` serves TLS only; a worker
(``run --connect``, ``status``, the pytest fixture) given ``--tls-ca FILE``
(or ``$MPMARKET_TLS_CA``) verifies the server's certificate against that CA
and its host name against the ``--connect`` address (a numeric address must
be an IP entry of the certificate). The authkey handshake and everything
after it run inside TLS: the socket is wrapped before
``multiprocessing.connection`` says a word.

- **The wrapped connection.** ``multiprocessing.connection.Connection``
  reads and writes its descriptor with ``os.read``/``os.write``, which would
  bypass TLS. ``TLSConnection`` is the same Connection (the same framing: a
  4-byte big-endian length, or -1 and an 8-byte one) whose ``_recv`` and
  ``_send`` go through the ``SSLSocket``. Its socket is non-blocking and it
  waits with ``poll`` for as long as the descriptor's ``SO_RCVTIMEO`` /
  ``SO_SNDTIMEO`` say (``wire.set_receive_timeout``), raising
  ``BlockingIOError`` when that runs out, as a stock Connection does: a
  blocking ``SSLSocket`` under ``SO_RCVTIMEO`` would retry its read forever.
- **Which servers a client wraps for.** ``trust(address, ca_file)`` says that
  the market at ``address`` speaks TLS under that CA; ``open_connection``
  asks ``client_context(address)``. It is written to the environment too
  (``MPMARKET_TLS_TRUST``), so that the agent processes a run starts, which
  attach to the same address, wrap as well, whatever their start method.
- **Mistakes are one line.** A wrong CA, an expired certificate, a host name
  that does not match, a TLS client against a plaintext server and a
  plaintext client against a TLS one each end in one ``MarketUnavailableError``
  line (exit 4) naming the cause. A plaintext client sends nothing first (the
  server speaks first in the manager's handshake), so a TLS server that hears
  nothing for ``PLAINTEXT_WINDOW_S`` sends it one frame saying it speaks TLS
  only (``TLS_ONLY``), logs one line and hangs up; the client reads that
  frame before the challenge it expected.
- **The key stays secret.** The key file must be a regular file readable by
  its owner only (as the authkey file); it is never printed nor logged.
"""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import select
import socket
import ssl
import stat
import struct
from dataclasses import dataclass
from multiprocessing import connection
from pathlib import Path
from typing import Any

from mpmarket.errors import MarketUnavailableError, MpmarketError
from mpmarket.net.framing import header
from mpmarket.net.mp_private import FastConnection, take_handle
from mpmarket.net.wire import Address, format_address

__all__ = [
    "ENV_CA",
    "PLAINTEXT_WINDOW_S",
    "TLS_ONLY",
    "ServerTLS",
    "TLSConnection",
    "TLSFileError",
    "accept_tls",
    "client_context",
    "load_server_tls",
    "refuse_if_tls_only",
    "trust",
    "wrap_client",
]

_log = logging.getLogger("mpmarket.net")

# The CA a worker verifies the server with, when --tls-ca is not given.
ENV_CA = "MPMARKET_TLS_CA"
# Which addresses speak TLS under which CA: set by ``trust``, read by the
# agent processes of a run (JSON: {"host:port": "ca file"}).
_ENV_TRUST = "MPMARKET_TLS_TRUST"

# How long a TLS server waits for a client's first bytes (its TLS hello)
# before taking it for a plaintext client waiting for its challenge. A TLS
# client sends its hello right after connecting; the window must stay below
# the client's HANDSHAKE_TIMEOUT so that a plaintext one reads why.
PLAINTEXT_WINDOW_S = 2.0
# The frame a TLS server sends a plaintext client instead of a challenge.
TLS_ONLY = b"#TLS-ONLY# this mpmarket server speaks TLS only"
_TLS_HANDSHAKE_RECORD = 0x16  # the first byte of a TLS client's hello

_TIMEVAL = struct.Struct("ll")


class TLSFileError(MpmarketError):
    """A TLS certificate, key or CA file is missing, unreadable, invalid or exposed."""


# -- files and contexts --------------------------------------------------------


@dataclass(frozen=True)
class ServerTLS:
    """A server's TLS context and where its files are; never shows the key."""

    context: ssl.SSLContext
    cert: Path
    key: Path

    def __repr__(self) -> str:
        return f"ServerTLS(cert={str(self.cert)!r})"


def _check_key_file(path: Path) -> None:
    """The key file's checks, as the authkey file's (``net/authkey.py``)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise TLSFileError(f"TLS key file {path} does not exist") from None
    except OSError as error:
        raise TLSFileError(f"cannot read TLS key file {path}: {error.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise TLSFileError(f"TLS key file {path} is not a regular file")
    if info.st_mode & 0o077:
        raise TLSFileError(
            f"TLS key file {path} is accessible by others (mode "
            f"{stat.S_IMODE(info.st_mode):04o}); run: chmod 600 {path}"
        )


def _readable(path: Path, what: str) -> None:
    if not path.exists():
        raise TLSFileError(f"{what} {path} does not exist")
    if not path.is_file():
        raise TLSFileError(f"{what} {path} is not a regular file")
    if not os.access(path, os.R_OK):
        raise TLSFileError(f"cannot read {what} {path}: permission denied")


def _reason(error: ssl.SSLError) -> str:
    return str(error.reason or error.strerror or error).replace("_", " ").lower()


def load_server_tls(cert: Path, key: Path) -> ServerTLS:
    """The context ``serve --tls-cert/--tls-key`` serves with (TLS 1.2 or later)."""
    _readable(cert, "TLS certificate file")
    _check_key_file(key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_RENEGOTIATION  # the serving loop reads and writes apart
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as error:  # says which, never what the key holds
        raise TLSFileError(
            f"cannot use TLS certificate {cert} with key {key}: {_reason(error)}"
        ) from None
    except OSError as error:
        raise TLSFileError(f"cannot read TLS certificate {cert} or key {key}: {error}") from None
    return ServerTLS(context, cert, key)


_client_contexts: dict[str, ssl.SSLContext] = {}


def load_client_context(ca_file: Path) -> ssl.SSLContext:
    """A context that verifies the server against ``ca_file`` and checks its host name."""
    _readable(ca_file, "TLS CA file")
    try:
        context = ssl.create_default_context(cafile=str(ca_file))
    except ssl.SSLError as error:
        raise TLSFileError(
            f"TLS CA file {ca_file} holds no usable certificate: {_reason(error)}"
        ) from None
    context.check_hostname = True
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _key(address: Address) -> str:
    return format_address(address)


def trust(address: Address, ca_file: Path) -> None:
    """Speak TLS to the market at ``address`` and verify it with ``ca_file``.

    Checks the file now (``TLSFileError``); recorded in this process and in
    its environment, for the processes it starts.
    """
    ca = str(Path(ca_file).resolve())
    _client_contexts[_key(address)] = load_client_context(Path(ca))
    table = _trusted_from_env()
    table[_key(address)] = ca
    os.environ[_ENV_TRUST] = json.dumps(table)


def forget(address: Address) -> None:
    """Speak plaintext to ``address`` again (the pytest fixture, after its test)."""
    _client_contexts.pop(_key(address), None)
    table = _trusted_from_env()
    if table.pop(_key(address), None) is not None:
        if table:
            os.environ[_ENV_TRUST] = json.dumps(table)
        else:
            os.environ.pop(_ENV_TRUST, None)


def _trusted_from_env() -> dict[str, str]:
    try:
        table = json.loads(os.environ.get(_ENV_TRUST, "") or "{}")
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in table.items()} if isinstance(table, dict) else {}


def client_context(address: Address) -> ssl.SSLContext | None:
    """The context to wrap connections to ``address`` with; None: plaintext."""
    key = _key(address)
    context = _client_contexts.get(key)
    if context is None and _ENV_TRUST in os.environ:
        ca = _trusted_from_env().get(key)
        if ca is not None:
            try:
                context = _client_contexts[key] = load_client_context(Path(ca))
            except TLSFileError as error:
                raise MarketUnavailableError(str(error)) from None
    return context


# -- the wrapped connection ----------------------------------------------------


def _timeout_of(sock: socket.socket, option: int) -> float | None:
    """The descriptor's SO_RCVTIMEO or SO_SNDTIMEO in seconds; None: unbounded."""
    seconds, micros = _TIMEVAL.unpack(sock.getsockopt(socket.SOL_SOCKET, option, _TIMEVAL.size))
    total = seconds + micros / 1_000_000
    return total if total > 0 else None


def _wait(sock: socket.socket, writing: bool) -> None:
    """Wait until ``sock`` is ready, as long as its SO_*TIMEO allows."""
    option = socket.SO_SNDTIMEO if writing else socket.SO_RCVTIMEO
    timeout = _timeout_of(sock, option)
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLOUT if writing else select.POLLIN)
    if not poller.poll(None if timeout is None else timeout * 1000):
        raise BlockingIOError(errno.EAGAIN, "timed out")


class TLSConnection(FastConnection):
    """A ``multiprocessing`` Connection over an ``SSLSocket``: the same framing, encrypted.

    The stock Connection reads and writes its descriptor itself; here
    ``_recv`` and ``_send`` go through the SSL object, non-blocking, waiting
    for as long as the descriptor's SO_RCVTIMEO / SO_SNDTIMEO allow.
    ``sslsock`` is the wrapped socket (the serving loop adopts it).
    """

    def __init__(self, sslsock: ssl.SSLSocket) -> None:
        sslsock.setblocking(False)
        super().__init__(sslsock.fileno())
        self.sslsock = sslsock

    def _recv(self, size: int, read: Any = None) -> io.BytesIO:
        buf = io.BytesIO()
        remaining = size
        sock = self.sslsock
        while remaining > 0:
            try:
                chunk = sock.recv(remaining)
            except ssl.SSLWantReadError:
                _wait(sock, writing=False)
                continue
            except ssl.SSLWantWriteError:
                _wait(sock, writing=True)
                continue
            if not chunk:
                if remaining == size:
                    raise EOFError
                raise OSError("got end of file during message")
            buf.write(chunk)
            remaining -= len(chunk)
        return buf

    def _send(self, buf: bytes, write: Any = None) -> None:
        view = memoryview(buf)
        sock = self.sslsock
        while view:
            try:
                sent = sock.send(view)  # all of it, or nothing yet (no partial writes)
            except ssl.SSLWantWriteError:
                _wait(sock, writing=True)
                continue
            except ssl.SSLWantReadError:
                _wait(sock, writing=False)
                continue
            view = view[sent:]

    def _close(self, _close: Any = None) -> None:
        self.sslsock.close()

    def take_socket(self) -> ssl.SSLSocket:
        """The SSL socket, which this connection no longer owns (nor closes)."""
        take_handle(self)
        return self.sslsock


# -- the server's side ---------------------------------------------------------


def _peer(sock: socket.socket) -> str:
    try:
        return str(sock.getpeername()[0])
    except (OSError, IndexError):
        return "?"


def _first_byte(sock: socket.socket, window: float) -> int | None:
    """The first byte the client sent, left in place; None if it sent none in time."""
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    if not poller.poll(window * 1000):
        return None
    sock.settimeout(0)
    try:
        data = sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return None
    return data[0] if data else -1


def accept_tls(
    conn: connection.Connection,
    tls: ServerTLS,
    timeout: float,
    window: float = PLAINTEXT_WINDOW_S,
) -> TLSConnection | None:
    """Wrap an accepted connection; None (``conn`` closed, one line logged) if it cannot be.

    A client that sends nothing for ``window`` seconds is a plaintext one
    waiting for its challenge: it is sent ``TLS_ONLY`` and let go. A client
    whose first byte is no TLS hello, or whose handshake fails or takes
    longer than ``timeout``, is let go too.
    """
    sock = socket.socket(fileno=take_handle(conn))
    peer = _peer(sock)
    try:
        # The handshakes' small writes go out now, not after a delayed ACK.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        first = _first_byte(sock, window)
        if first != _TLS_HANDSHAKE_RECORD:
            if first is None:  # waiting for a challenge: tell it why, in its framing
                sock.settimeout(timeout)
                sock.sendall(header(len(TLS_ONLY)) + TLS_ONLY)
            if first != -1:  # -1: it hung up without a word
                _log.warning(
                    "mpmarket: refused a plaintext connection from %s: this server speaks TLS only",
                    peer,
                )
            sock.close()
            return None
        sock.settimeout(timeout)
        sslsock = tls.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        sock = sslsock
        sslsock.do_handshake()
    except ssl.SSLError as error:
        _log.warning("mpmarket: TLS handshake with %s failed: %s", peer, _reason(error))
        sock.close()
        return None
    except OSError as error:  # timed out, reset
        _log.warning("mpmarket: TLS handshake with %s failed: %s", peer, error)
        sock.close()
        return None
    return TLSConnection(sslsock)


# -- the client's side ---------------------------------------------------------


def refuse_if_tls_only(sock: socket.socket, where: str) -> None:
    """On a plaintext connection: raise if the server says it speaks TLS only.

    Peeks at the server's first frame (its challenge, normally), which stays
    in place for the handshake; a server that says nothing yet is left to it.
    """
    try:
        data = sock.recv(64, socket.MSG_PEEK)
    except OSError:
        return
    if TLS_ONLY in data:
        raise MarketUnavailableError(
            f"the market at {where} speaks TLS only: give --tls-ca FILE (or ${ENV_CA})"
        )


class TLSHandshakeError(MarketUnavailableError):
    """The TLS handshake with the server failed for good (certificate, host, protocol)."""


# Reasons OpenSSL gives when the other end does not speak TLS.
_NOT_TLS = (
    "WRONG_VERSION_NUMBER",
    "RECORD_LAYER_FAILURE",
    "PACKET_LENGTH_TOO_LONG",
    "UNKNOWN_PROTOCOL",
    "HTTP_REQUEST",
    "UNEXPECTED_EOF_WHILE_READING",
)


def wrap_client(
    sock: socket.socket, context: ssl.SSLContext, host: str, where: str, timeout: float
) -> TLSConnection:
    """Wrap a connected socket and shake hands, verifying the server as ``host``.

    Raises ``TLSHandshakeError`` (one line) for a certificate that does not
    verify (wrong CA, expired, another host) or a server that does not speak
    TLS; ``OSError`` for a handshake cut or timed out (tried again).
    ``sock`` is closed on any failure.
    """
    try:
        sock.settimeout(timeout)
        sslsock = context.wrap_socket(sock, server_hostname=host.strip("[]"))
    except ssl.SSLCertVerificationError as error:
        sock.close()
        raise TLSHandshakeError(
            f"TLS: cannot verify the market at {where}: {error.verify_message or _reason(error)}"
        ) from None
    except ssl.SSLError as error:
        sock.close()
        if str(error.reason) in _NOT_TLS or isinstance(error, ssl.SSLEOFError):
            raise TLSHandshakeError(
                f"TLS: the market at {where} does not speak TLS "
                f"(served without --tls-cert?): {_reason(error)}"
            ) from None
        raise TLSHandshakeError(
            f"TLS handshake with the market at {where} failed: {_reason(error)}"
        ) from None
    except OSError:
        sock.close()
        raise
    return TLSConnection(sslsock)
