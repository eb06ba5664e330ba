"""What a market server and its clients agree on: addresses, identities, the protocol.

The wire format is the manager's own (``multiprocessing.connection`` framing
around pickled requests and answers; see ``mpmarket.net.loop``). Over it, a
server (``mpmarket.net.server``) serves two well-known objects and nothing
else: the market under ``MARKET_IDENT``, with the methods in ``EXPOSED``, and
the session under ``SESSION_IDENT``, with ``SESSION_EXPOSED``. A client
(``mpmarket.net.client``) says hello with its mpmarket and protocol versions
right after the handshake; both ends must run the same ones. The hello's
answer carries the market's identity, which the client compares on each
connection it makes.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass

from mpmarket.core.books import MARKET_OPERATIONS

__all__ = [
    "DEFAULT_MAX_REQUEST_SIZE",
    "DEFAULT_PORT",
    "EXPOSED",
    "HANDSHAKE_TIMEOUT",
    "MARKET_IDENT",
    "MARKET_TYPEID",
    "MIN_MAX_REQUEST_SIZE",
    "PROTOCOL_VERSION",
    "SESSION_EXPOSED",
    "SESSION_IDENT",
    "Address",
    "AgentInfo",
    "format_address",
    "is_loopback",
    "parse_address",
    "set_receive_timeout",
]

Address = tuple[str, int]

MARKET_IDENT = "market"
MARKET_TYPEID = "Marketplace"
SESSION_IDENT = "session"

# The port ``mpmarket serve`` listens on unless told otherwise.
DEFAULT_PORT = 7151

# What goes over the wire: the exposed methods, their arguments and results.
# Raise it on any change of those; a worker and a server must agree on it
# (and on the mpmarket version) to attach. 2: the hello answers the market's
# identity too.
PROTOCOL_VERSION = 2

# How long one TCP connect plus authentication handshake may take before the
# client gives up on that try and connects again. Short enough to recover
# quickly from a dropped connection, long enough for a loaded 2-core machine.
# The server bounds its side of the handshake by the same.
HANDSHAKE_TIMEOUT = 5.0

# The largest request a server reads (``mpmarket serve --max-request-size``):
# its length header is read first, and a longer request is refused before
# any of it is kept. The protocol's requests are ids, a timeout and at most
# one product: a few hundred bytes, a few kilobytes with long names; 1 MiB
# leaves room for any workload a person writes and bounds what one
# connection can make the server hold. A limit below the minimum would
# refuse the handshake's own requests.
DEFAULT_MAX_REQUEST_SIZE = 1 << 20
MIN_MAX_REQUEST_SIZE = 4096

# The market's methods a client may call: the market's operations, listed once.
EXPOSED = MARKET_OPERATIONS
SESSION_EXPOSED = ("hello", "agents")


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
        ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback for info in infos
    )


@dataclass(frozen=True)
class AgentInfo:
    """A client attached to the server: what its hello said, and since when."""

    name: str
    role: str  # "producer", "consumer", "runner", "status" or another client
    host: str  # the peer's address as the server sees it
    attached_s: float  # seconds since its hello, when asked


def set_receive_timeout(fd: int, seconds: float) -> None:
    """Bound (or, with 0, unbound) blocking reads and writes on a connected socket."""
    sock = socket.socket(fileno=fd)
    try:
        whole = int(seconds)
        timeval = struct.pack("ll", whole, int((seconds - whole) * 1_000_000))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
    finally:
        sock.detach()
