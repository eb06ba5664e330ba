"""A fuzzed protocol: random and mutated frames against a served market, over loopback.

Each input goes over a connection of its own, after the real handshake with
the key: raw garbage; frames of any length header (negative, huge, the long
form, over the server's limit) around valid requests mutated, truncated or
extended; valid pickles of allowed types in every wrong shape; and the
handshake itself cut after every byte the client sends, or with that byte
flipped. Then the client hangs up (its send side first, so a server waiting
for the rest of a frame sees the end). After each input the serving thread
must be alive and the books balanced; every few inputs, and at the end, a
well-behaved client must be served.
"""

from __future__ import annotations

import math
import os
import pickle
import socket
import struct
import threading
import time
from collections.abc import Iterator
from multiprocessing import connection, managers
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mpmarket.core.market import Marketplace
from mpmarket.net.client import connect, open_connection
from mpmarket.net.server import ServedMarket, new_authkey
from mpmarket.net.wire import (
    EXPOSED,
    MARKET_IDENT,
    SESSION_EXPOSED,
    SESSION_IDENT,
    set_receive_timeout,
)
from mpmarket.products import Coffee, Product, Tea
from tests.fuzz import campaign

LIMIT = 64 << 10  # the served market's --max-request-size: oversized frames stay cheap
CALL_S = 10.0
CANARY_EVERY = 25

_state: dict[str, Any] = {}


@pytest.fixture(scope="module")
def served() -> Iterator[ServedMarket]:
    market = Marketplace(3)
    authkey = new_authkey()
    serving = ServedMarket(market, ("127.0.0.1", 0), authkey, max_request_size=LIMIT)
    serving.start()
    _state.update(serving=serving, authkey=authkey, canary=connect(serving.address, authkey))
    # Something to buy and carts to fill, for requests that happen to make sense.
    canary = _state["canary"]
    producer = canary.register_producer()
    for product in (LINDEN, ARABICA):
        canary.publish(producer, product)
    canary.new_cart()
    try:
        yield serving
    finally:
        market.close()
        _state.clear()


LINDEN = Tea("Linden", 9, "Herbal")
ARABICA = Coffee("Arabica", 3, 4.5, "DARK")

# -- what a request is made of ------------------------------------------------------

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.binary(max_size=20),
)
_products = st.one_of(
    st.sampled_from([LINDEN, ARABICA, Product("Cup", 2)]),
    st.builds(Tea, st.text(max_size=10), st.integers(0, 20), st.text(max_size=10)),
)


def _shaped(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(st.text(max_size=5), inner, max_size=3),
        st.frozensets(_scalars.filter(lambda v: v == v), max_size=3),
    )


_values = st.recursive(_scalars | _products, _shaped, max_leaves=12)
# Any method but ``close``: a request that closes the market is a legitimate one.
_methods = st.one_of(
    st.sampled_from([m for m in EXPOSED if m != "close"] + list(SESSION_EXPOSED)),
    st.sampled_from(["accept_connection", "shutdown", "create", "#GETVALUE", "__init__"]),
    st.text(max_size=12),
)
_idents = st.one_of(st.sampled_from([MARKET_IDENT, SESSION_IDENT, None]), _values)
_requests = st.one_of(
    st.tuples(_idents, _methods, st.lists(_values, max_size=5).map(tuple), st.just({})),
    st.tuples(_idents, _methods, _values, _values),  # args and kwds of the wrong kinds
    st.tuples(_idents, _methods, st.just(()), st.dictionaries(st.text(max_size=8), _values)),
    _values,  # not a request at all
    st.lists(_values, min_size=3, max_size=5).map(tuple),  # a request of the wrong length
)


def _pickled(request: Any, protocol: int) -> bytes:
    try:
        return pickle.dumps(request, protocol)
    except (pickle.PicklingError, RecursionError, ValueError, TypeError):
        return pickle.dumps(None, protocol)


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    """A valid request's pickle with bytes flipped, cut, inserted or repeated."""
    data = bytearray(_pickled(draw(_requests), draw(st.integers(0, pickle.HIGHEST_PROTOCOL))))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "repeat", "opcode"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "cut":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "repeat":
            data[at:at] = data[at : at + draw(st.integers(1, 16))]
        else:  # an opcode that builds things where it is least expected
            data[at:at] = draw(st.sampled_from([b"b", b"R", b"\x81", b"\x92", b"o", b"i", b"\x82"]))
    return bytes(data)


def _header(size: int) -> bytes:
    if -(2**31) <= size < 2**31:
        return struct.pack("!i", size)
    return struct.pack("!i", -1) + struct.pack("!Q", size % 2**64)


@st.composite
def _frames(draw: st.DrawFn) -> bytes:
    """One or more frames: the length true, or any length, or over the limit."""
    out = bytearray()
    for _ in range(draw(st.integers(1, 3))):
        body = draw(
            st.one_of(
                st.builds(_pickled, _requests, st.integers(0, pickle.HIGHEST_PROTOCOL)),
                _mutated(),
                st.binary(max_size=64),
            )
        )
        length = draw(
            st.one_of(
                st.just(len(body)),
                st.integers(-(2**31), 2**31 - 1),
                st.integers(0, 2**64 - 1),
                st.integers(LIMIT + 1, LIMIT + 4096),
                st.integers(max(0, len(body) - 8), len(body) + 8),
            )
        )
        out += _header(length) + body
    if draw(st.booleans()):  # truncated anywhere
        del out[draw(st.integers(0, len(out))) :]
    return bytes(out)


# -- one input, and the checks after it --------------------------------------------


def _send(payload: bytes, *, accept: bool = True) -> None:
    serving, authkey = _state["serving"], _state["authkey"]
    conn = open_connection(serving.address, authkey, time.monotonic() + CALL_S)
    sock = socket.socket(fileno=conn.fileno())
    try:
        if accept:
            managers.dispatch(conn, None, "accept_connection", ("fuzz",))
        sock.settimeout(CALL_S)
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(1 << 16):  # until the server hangs up: it must, on our end
            pass
    except (OSError, EOFError):
        pass  # refused, reset, or told off: all fine; the checks below judge
    finally:
        sock.detach()
        conn.close()


def _check(what: str) -> None:
    """The serving thread alive, the books balanced; every so often, a client served."""
    campaign.FIGURES["inputs tried"] += 1
    campaign.FIGURES["protocol inputs"] += 1
    serving = _state["serving"]
    loop = serving._server.loop
    if loop._thread_id not in {thread.ident for thread in threading.enumerate()}:
        campaign.failed("server crashes", f"the serving thread is gone after {what}")
    books = serving.market.books()
    if not books.balanced or serving.market.audit():
        campaign.failed("books out of balance", f"{books} after {what}")
    if campaign.FIGURES["protocol inputs"] % CANARY_EVERY == 0:
        _canary(what)


def _canary(what: str) -> None:
    canary = _state["canary"]
    try:
        canary.new_cart()
        assert canary.books().balanced
    except Exception as error:
        campaign.failed("server crashes", f"a client not served ({error!r}) after {what}")
        _state["canary"] = connect(_state["serving"].address, _state["authkey"])


def _fuzz(strategy: st.SearchStrategy[bytes], *, accept: bool = True) -> None:
    @settings(
        max_examples=campaign.examples(),
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def one_round(payload: bytes) -> None:
        _send(payload, accept=accept)
        _check(repr(payload[:200]))

    campaign.run(one_round)
    _canary("the round")
    assert not campaign.FAILURES, campaign.FAILURES


def test_garbage_after_the_handshake(served):
    _fuzz(st.binary(max_size=512))


def test_garbage_instead_of_accept_connection(served):
    _fuzz(st.one_of(st.binary(max_size=256), _frames()), accept=False)


def test_random_and_mutated_frames(served):
    _fuzz(_frames())


def test_valid_pickles_of_allowed_types_in_wrong_shapes(served):
    _fuzz(
        st.builds(_pickled, _requests, st.integers(0, pickle.HIGHEST_PROTOCOL)).map(
            lambda body: _header(len(body)) + body
        )
    )


class _CutConnection(connection.Connection):
    """A client connection that sends ``budget`` bytes, then hangs up (or flips that byte)."""

    budget = 0
    flip = False

    def _send(self, buf: bytes, write: Any = None) -> None:
        data = bytes(buf)
        if len(data) <= self.budget:
            self.budget -= len(data)
            super()._send(data)
            return
        if self.flip:
            data = data[: self.budget] + bytes([data[self.budget] ^ 0xFF]) + data[self.budget + 1 :]
            self.budget = math.inf  # type: ignore[assignment]
            super()._send(data)
            # No more from us: a server waiting for the rest of a frame sees the end.
            with socket.socket(fileno=os.dup(self.fileno())) as sock:
                sock.shutdown(socket.SHUT_WR)
            return
        super()._send(data[: self.budget])
        raise ConnectionAbortedError("cut here")


def _raw(cls: type[connection.Connection]) -> connection.Connection:
    """A blocking connection of class ``cls`` to the server, reads bounded."""
    sock = socket.create_connection(_state["serving"].address, timeout=CALL_S)
    sock.setblocking(True)
    fd = sock.detach()
    set_receive_timeout(fd, 2.0)
    return cls(fd)


def _handshake_bytes(authkey: bytes) -> int:
    """How many bytes a client sends in the handshake and its ``accept_connection``."""
    sent = 0

    class Counting(connection.Connection):
        def _send(self, buf: bytes, write: Any = None) -> None:
            nonlocal sent
            sent += len(buf)
            super()._send(buf)

    conn = _raw(Counting)
    try:
        connection.answer_challenge(conn, authkey)
        connection.deliver_challenge(conn, authkey)
        managers.dispatch(conn, None, "accept_connection", ("count",))
    finally:
        conn.close()
    return sent


@pytest.mark.parametrize("flip", [False, True], ids=["cut", "flipped"])
def test_the_handshake_cut_or_flipped_at_every_byte(served, flip):
    authkey = _state["authkey"]
    total = _handshake_bytes(authkey)
    assert total > 50
    for at in range(total if flip else total + 1):
        conn = _raw(_CutConnection)
        assert isinstance(conn, _CutConnection)
        conn.budget, conn.flip = at, flip
        try:
            connection.answer_challenge(conn, authkey)
            connection.deliver_challenge(conn, authkey)
            managers.dispatch(conn, None, "accept_connection", ("cut",))
        except Exception:
            pass  # cut, refused, or the server's answer to a flipped byte
        finally:
            conn.close()
        _check(f"the handshake {'flipped' if flip else 'cut'} at byte {at}")
    _canary("the handshake")
    assert not campaign.FAILURES, campaign.FAILURES
