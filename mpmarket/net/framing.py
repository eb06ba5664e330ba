"""The manager's framing, read incrementally: linear in a request's size, and bounded.

``multiprocessing.connection`` frames each message with a 4-byte big-endian
length, or -1 and an 8-byte one. ``Framing`` cuts one connection's byte
stream into requests as reads arrive, for the serving loop
(``mpmarket.net.loop``):

- a length header is read first; a request longer than the limit is refused
  before any of it is kept (``feed`` stops and sets ``refused``), and the rest
  of it may then be read and dropped (``discard``) so that its sender's send
  completes and it can read why;
- a request that spans reads is collected in a buffer of its own, and each
  read is bounded to what remains of it (``want``): nothing is copied twice,
  however long the request (re-copying the unfinished part on every read made
  a 128 MiB request cost 19.6 s of the serving thread).
"""

from __future__ import annotations

import struct

from mpmarket.errors import InvalidArgumentError

__all__ = ["DRAIN_MAX", "Framing", "header", "too_large"]

_SIZE = struct.Struct("!i")
_LONG_SIZE = struct.Struct("!Q")
_LONG = 0x7FFFFFFF  # longer messages: -1, then an 8-byte length

# The rest of a refused request is read and dropped up to this much (or the
# limit, if larger), so that its sender, whose send completes, can read why;
# past it the connection is closed at once.
DRAIN_MAX = 64 << 20


def header(size: int) -> bytes:
    """The length header of a message of ``size`` bytes."""
    if size <= _LONG:
        return _SIZE.pack(size)
    return _SIZE.pack(-1) + _LONG_SIZE.pack(size)


def too_large(size: int, limit: int) -> InvalidArgumentError:
    """What the sender of a request over the limit is told."""
    return InvalidArgumentError(
        f"request of {size:,} bytes refused: the server takes at most {limit:,} "
        "(mpmarket serve --max-request-size)"
    )


class Framing:
    """The requests of one connection, cut from what its reads return."""

    __slots__ = ("discard", "inbox", "limit", "partial", "refused", "size")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.inbox = b""  # a length header not complete yet
        self.partial: bytearray | None = None  # a request longer than one read
        self.size = 0  # the length of ``partial`` once complete
        self.discard = 0  # bytes of a refused request still to read and drop
        self.refused: int | None = None  # the claimed length of a refused request

    def want(self, room: int) -> int:
        """How much the next read may take: never past a long request or a discard."""
        if self.partial is not None:
            return min(room, self.size - len(self.partial))
        if self.discard:
            return min(room, self.discard)
        return room

    def feed(self, view: memoryview) -> list[bytes | bytearray]:
        """The requests ``view`` completes, in order.

        Stops at a length over the limit (or a negative one): ``refused`` is
        set to it and ``discard`` to what of it has not arrived yet, and
        nothing more is read as requests.
        """
        if self.discard:
            self.discard -= min(self.discard, len(view))
            return []
        partial = self.partial
        if partial is not None:
            partial += view
            if len(partial) < self.size:
                return []
            self.partial = None
            return [partial]
        messages: list[bytes | bytearray] = []
        data: bytes | memoryview = self.inbox + view if self.inbox else view
        end = len(data)
        at = 0
        while end - at >= 4:
            (size,) = _SIZE.unpack_from(data, at)
            start = at + 4
            if size == -1:
                if end - at < 12:
                    break
                (size,) = _LONG_SIZE.unpack_from(data, start)
                start += 8
            if size < 0 or size > self.limit:
                self.refused = size
                self.discard = max(0, size - (end - start))
                self.inbox = b""
                return messages
            if end - start < size:  # the rest comes in later reads
                self.partial = bytearray(data[start:end])
                self.size = size
                at = end
                break
            at = start + size
            messages.append(bytes(data[start:at]))
        self.inbox = bytes(data[at:]) if at < end else b""
        return messages
