"""The exceptions of mpmarket, one tree under ``MpmarketError``.

::

    MpmarketError
    ├── MarketError                 raised by the Marketplace (and through its proxy)
    │   ├── UnknownProducerError    a producer id that register_producer never gave
    │   ├── UnknownCartError        a cart id that new_cart never gave
    │   ├── InvalidArgumentError    an argument of the wrong type or value
    │   ├── CartRevokedError        the cart was released: its owner was taken for dead
    │   └── MarketClosedError       the market was closed: the run is over
    ├── MarketUnavailableError      the server cannot be reached or went away
    │   ├── MarketLostError         the run's own server died mid-run
    │   ├── MarketChangedError      another market answers at the address: the server restarted
    │   └── VersionMismatchError    the server runs another mpmarket or protocol version
    │   └── UnsafeReplyError        the server sent an object outside the protocol's types
    ├── AuthkeyError                an authkey is missing, unreadable, too short or exposed
    ├── WorkloadError               a workload file or flag is wrong (file, field, expected)
    ├── RunError                    a run failed: an agent died or reported an error
    └── StallError                  no consumer made progress: who waits for what

Every exception keeps its constructor arguments in ``args`` so that it
pickles: the manager re-raises the server's exception object in the client,
and a proxy caller must see the same type as a local caller.
"""

from __future__ import annotations

import re

__all__ = [
    "AuthkeyError",
    "CartRevokedError",
    "InvalidArgumentError",
    "MarketChangedError",
    "MarketClosedError",
    "MarketError",
    "MarketLostError",
    "MarketUnavailableError",
    "MpmarketError",
    "RunError",
    "StallError",
    "UnknownCartError",
    "UnknownProducerError",
    "UnsafeReplyError",
    "VersionMismatchError",
    "WorkloadError",
]


class MpmarketError(Exception):
    """Base of every error mpmarket raises on purpose."""


class MarketError(MpmarketError):
    """An operation the Marketplace refused."""


class UnknownProducerError(MarketError):
    """The producer id was never registered."""

    def __init__(self, producer_id: object) -> None:
        super().__init__(producer_id)
        self.producer_id = producer_id

    def __str__(self) -> str:
        return f"unknown producer id {self.producer_id!r}"


class UnknownCartError(MarketError):
    """The cart id was never handed out."""

    def __init__(self, cart_id: object) -> None:
        super().__init__(cart_id)
        self.cart_id = cart_id

    def __str__(self) -> str:
        return f"unknown cart id {self.cart_id!r}"


class InvalidArgumentError(MarketError):
    """An argument has the wrong type or value (the server stays consistent)."""


class CartRevokedError(MarketError):
    """The cart was released (its owner was taken for dead); it is unusable.

    A fencing token of sorts: a consumer that was only frozen and wakes after
    its cart went back on sale must not buy those products a second time.
    """

    def __init__(self, cart_id: object) -> None:
        super().__init__(cart_id)
        self.cart_id = cart_id

    def __str__(self) -> str:
        return f"cart {self.cart_id!r} was released: its owner was taken for dead"


class MarketClosedError(MarketError):
    """The market is closed; no operation is possible any more."""

    def __init__(self, message: str = "the market is closed") -> None:
        super().__init__(message)


class MarketUnavailableError(MpmarketError):
    """The market server cannot be reached, refused us, or went away."""


class VersionMismatchError(MarketUnavailableError):
    """The server runs another mpmarket version or protocol: refused at attach."""


class UnsafeReplyError(MarketUnavailableError):
    """The server answered with an object outside the protocol's types: refused unbuilt.

    Only the market's own types cross the wire (``mpmarket.net.safe_pickle``);
    a server that sends anything else is not a market server to trust.
    """


class AuthkeyError(MpmarketError):
    """An authkey is missing, unreadable, too short, or readable by others.

    Its message names the file or the variable, never the key; one line,
    always (a file's name may hold a line break).
    """

    def __str__(self) -> str:
        return _CONTROL.sub(_escape, super().__str__())


class MarketChangedError(MarketUnavailableError):
    """The server at the proxy's address serves another market than the one it attached to.

    Its server restarted (or another took its address): the carts and
    producers of the proxy's ids are gone, and a call must not reach the new
    market with them. ``connect()`` again to start over.
    """


class MarketLostError(MarketUnavailableError):
    """The server a run started died while the run went on."""


class StallError(MpmarketError):
    """No consumer made progress for too long; ``lines`` explain who waits for what."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__(lines)
        self.lines = tuple(lines)

    def __str__(self) -> str:
        return self.lines[0] if self.lines else "stalled"


class WorkloadError(MpmarketError):
    """A workload is wrong: which file, which field, what was expected."""

    def __init__(self, source: str, field: str, expected: str, got: str | None = None) -> None:
        super().__init__(source, field, expected, got)
        self.source = source
        self.field = field
        self.expected = expected
        self.got = got

    def __str__(self) -> str:
        where = f"{self.source}: {self.field}" if self.field else self.source
        got = f", got {self.got}" if self.got is not None else ""
        # One line, always: a key read from a file may hold a newline.
        return _CONTROL.sub(_escape, f"{where}: expected {self.expected}{got}")


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _escape(match: re.Match[str]) -> str:
    return repr(match.group())[1:-1]


class RunError(MpmarketError):
    """A run could not complete: an agent died or reported an error."""
