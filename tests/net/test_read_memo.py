"""The read memos and the checks around them, attacked: real payloads over loopback.

``mpmarket.net.safe_pickle`` remembers what it read (``ReadMemo``): the
server its requests by their bytes, a client its answers by their bytes and
its products by their fields. Each test here is an attack on that, or on
what a remembered value may cost, through the real path: a market served in
this process and reached over a raw loopback socket (``_attach``), or a
rogue server answering mpmarket's client (``_RogueServer``).
"""

from __future__ import annotations

import gc
import math
import pickle
import pickletools
import struct
import subprocess
import sys
import threading
import weakref
from collections.abc import Callable
from multiprocessing import managers
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpmarket.errors import InvalidArgumentError, MarketUnavailableError, UnsafeReplyError
from mpmarket.net.client import connect
from mpmarket.net.pickle_scan import NO_HASHING
from mpmarket.net.safe_pickle import MAX_ITEMS, load_reply, load_request
from mpmarket.net.server import new_authkey
from mpmarket.net.wire import MARKET_IDENT
from mpmarket.products import Coffee, Tea
from tests.net.test_safe_pickle import (
    CALL_S,
    _attach,
    _hung_up,
    _raw_answer,
    _RogueServer,
    _serves_and_balances,
)


def _order_from(rogue: Callable[..., _RogueServer], answer: bytes) -> list[Any]:
    """What mpmarket's client reads from a server whose every answer is ``answer``."""
    authkey = new_authkey()
    market = connect(rogue(answer, authkey).address, authkey, timeout=CALL_S)
    try:
        order: list[Any] = market.place_order(0)
        return order
    finally:
        market.disconnect()


def _x(text: str) -> bytes:
    """A pickle BINUNICODE of ``text``."""
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


# -- equal is not the same: a product's fields must be read as sent ---------------


@pytest.mark.parametrize(
    "first, then", [(0.0, -0.0), (-0.0, 0.0)], ids=["0-then-neg0", "neg0-then-0"]
)
def test_a_product_read_after_an_equal_one_keeps_the_sign_of_its_zero(rogue, first, then):
    """``0.0 == -0.0``: a product memo keyed by equal fields answered one for the other.

    A rogue server (or a product of another workload) read first decided
    the price a client printed for the honest server's product.
    """
    (one,) = _order_from(rogue, pickle.dumps(("#RETURN", [Coffee("Zero", first, first, "x")])))
    (other,) = _order_from(rogue, pickle.dumps(("#RETURN", [Coffee("Zero", then, then, "x")])))
    assert math.copysign(1, one.price) == math.copysign(1, first)
    assert math.copysign(1, other.price) == math.copysign(1, then)
    assert math.copysign(1, other.acidity) == math.copysign(1, then)
    assert repr(other) == repr(Coffee("Zero", then, then, "x"))


def test_a_large_product_read_once_is_not_kept(served):
    """Each client keeps at most 1,024 products, of at most 256 bytes each: not a 100 kB name."""
    serving, authkey = served
    big = Tea("L" * 100_000, 1, "x")
    market = connect(serving.address, authkey)
    producer = market.register_producer()
    assert market.publish(producer, big)
    cart = market.new_cart()
    assert market.add_many(cart, big, 1) == 1
    (bought,) = market.place_order(cart)
    market.disconnect()
    assert bought == big and bought is not big
    held = weakref.ref(bought)
    del bought
    gc.collect()
    assert held() is None, "the client kept a product of a 100 kB name"


# -- a client's shared products: no opcode writes them ---------------------------

_HELD = b"cmpmarket.products\nTea\n(" + _x("Held") + b"K\x07" + _x("x") + b"tR"
_ANSWER = b"\x80\x02" + _x("#RETURN") + b"]"
_END = b"a\x86."
_MUTATIONS = {
    "BUILD a dict": _HELD + b"}" + _x("name") + _x("Forged") + b"sb",
    "BUILD slots": _HELD + b"N}" + _x("name") + _x("Forged") + b"s\x86b",
    "memo PUT, GET, BUILD": _HELD + b"q\x010h\x01}" + _x("_hash") + b"K\x05sb",
    "SETITEM": _HELD + _x("name") + _x("Forged") + b"s",
    "SETITEMS": _HELD + b"(" + _x("name") + _x("Forged") + b"u",
    "APPEND": _HELD + _x("Forged") + b"a",
    "APPENDS": _HELD + b"(" + _x("Forged") + b"e",
    "ADDITEMS": _HELD + b"(" + _x("Forged") + b"\x90",
    "NEWOBJ of the maker": b"cmpmarket.products\nTea\n)\x81",
    "NEWOBJ_EX of the maker": b"cmpmarket.products\nTea\n)}\x92",
}


@pytest.mark.parametrize("name", list(_MUTATIONS))
def test_no_opcode_writes_a_product_a_client_holds(rogue, name):
    """A product read once is the one later answers get; every way to write it fails unwritten."""
    held = Tea("Held", 7, "x")
    (bought,) = _order_from(rogue, pickle.dumps(("#RETURN", [held])))
    (again,) = _order_from(rogue, _ANSWER + _HELD + _END)
    assert again is bought  # shared: what the attacks below would reach
    state, hashed = dict(bought.__dict__), hash(bought)
    with pytest.raises(MarketUnavailableError):
        _order_from(rogue, _ANSWER + _MUTATIONS[name] + _END)
    assert bought.__dict__ == {**state, "_hash": hashed}
    assert bought.name == "Held" and hash(bought) == hash(Tea("Held", 7, "x"))
    (after,) = _order_from(rogue, _ANSWER + _HELD + _END)
    assert after is bought and after.name == "Held"


# -- threads: the memos are shared by a process's threads ------------------------


def _answers() -> list[tuple[bytes, str]]:
    """More different answers than the memos hold (so they empty while read), with their reprs."""
    values: list[Any] = []
    for i in range(1500):
        price = (0.0, -0.0, float(i), i)[i % 4]
        values.append([Tea(f"T{i // 4 % 300}", price, "x")])
        values.append(i % 3 == 0)
        values.append(i)
    return [(pickle.dumps(("#RETURN", v)), repr(("#RETURN", v))) for v in values]


def _requests() -> list[tuple[bytes, str]]:
    values = []
    for i in range(5000):
        price = (0.0, -0.0, float(i), i)[i % 4]
        values.append((MARKET_IDENT, "publish", (i % 7, Tea(f"T{i // 4 % 900}", price, "x")), {}))
    return [(pickle.dumps(v), repr(v)) for v in values]


@pytest.mark.parametrize("read, messages", [(load_reply, _answers), (load_request, _requests)])
def test_threads_reading_at_once_each_get_what_was_sent(read, messages):
    """Eight threads read the same messages in different orders while the memos fill and empty."""
    cases = messages()
    wrong: list[str] = []

    def reader(offset: int) -> None:
        for _ in range(2):
            for data, expected in cases[offset:] + cases[:offset]:
                got = repr(read(data))
                if got != expected:
                    wrong.append(f"{expected} read as {got}")
                    return

    threads = [threading.Thread(target=reader, args=(k * 397,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(thread.is_alive() for thread in threads)
    assert not wrong, wrong[:3]


# -- what a shared container costs: counted per use, bounded ----------------------


def _dag(levels: int) -> bytes:
    """Pickle code pushing ``((t, t), (t, t))``... ``levels`` deep: 2 bytes a level, 2**levels leaves."""
    return b")" + b"2\x86" * levels


_ENVELOPE = b"\x80\x02(" + _x("market")
_SHARED = {
    "a pair shared 40 deep as an argument": _ENVELOPE + _x("new_cart") + _dag(40) + b"\x85}t.",
    "as the ident": b"\x80\x02(" + _dag(40) + _x("new_cart") + b")}t.",
    "as the method": _ENVELOPE + _dag(40) + b")}t.",
    "as a keyword's value": _ENVELOPE + _x("new_cart") + b")}" + _x("k") + _dag(40) + b"st.",
    "one 10 kB string a list holds 100,000 times": _ENVELOPE
    + _x("publish")
    + b"K\x00]("
    + _x("s" * 10_000)
    + b"q\x01"
    + b"h\x01" * 99_999
    + b"e\x86}t.",
    "one product a list holds 200,000 times": _ENVELOPE
    + _x("publish")
    + b"K\x00]("
    + b"cmpmarket.products\nTea\n("
    + _x("n" * 50)
    + b"K\x01"
    + _x("x")
    + b"tRq\x01"
    + b"h\x01" * 199_999
    + b"e\x86}t.",
}


@pytest.mark.parametrize("name", list(_SHARED))
def test_a_container_shared_in_a_request_is_refused_at_once(served, name):
    """Pre-fix, 70 bytes took the server forever (hash, depth walk, an error's repr)."""
    serving, authkey = served
    conn = _attach(serving, authkey)
    try:
        conn.send_bytes(_SHARED[name])
        kind, error = _raw_answer(conn)  # within CALL_S
        assert kind == "#ERROR" and isinstance(error, InvalidArgumentError), (kind, error)
        assert f"more than {MAX_ITEMS:,} items" in str(error)
        assert len(str(error)) < 200
        assert managers.dispatch(conn, MARKET_IDENT, "new_cart") == 0  # it lives on
    finally:
        conn.close()
    _serves_and_balances(serving, authkey)


# -- what the C unpickler hashes while it reads: scanned first -------------------

_LOAD_TIME = {
    "a pair shared 40 deep as a keyword's name": _ENVELOPE
    + _x("new_cart")
    + b")}"
    + _dag(40)
    + b"Nst.",
    "a pair shared 40 deep in a set": _ENVELOPE
    + _x("new_cart")
    + b"\x8f("
    + _dag(40)
    + b"\x90\x85}t.",
    "a tuple a million deep as a keyword's name (a stack overflow)": _ENVELOPE
    + _x("new_cart")
    + b")})"
    + b"\x85" * 1_000_000
    + b"Nst.",
}


def _read_in_child(reader: str, data: bytes, tmp_path: Path) -> subprocess.CompletedProcess[bytes]:
    """``safe_pickle.<reader>(data)`` in a child process, bounded: it prints what it raised.

    What would hang or crash (2**40 hashes, SIGSEGV) takes the child only.
    """
    payload = tmp_path / "payload"
    payload.write_bytes(data)
    code = (
        f"from mpmarket.net.safe_pickle import {reader}\n"
        "try:\n"
        f"    {reader}(open({str(payload)!r}, 'rb').read())\n"
        "except Exception as error:\n"
        "    print(type(error).__name__)\n"
    )
    try:
        return subprocess.run([sys.executable, "-c", code], timeout=20, capture_output=True)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{reader} did not end within 20 s")


@pytest.mark.parametrize("name", list(_LOAD_TIME))
def test_a_tuple_hashed_while_a_request_is_read_is_refused_at_once(name, tmp_path):
    """In a child process, bounded: without the scan it hung (2**40 hashes) or died (SIGSEGV)."""
    done = _read_in_child("load_request", _LOAD_TIME[name], tmp_path)
    assert done.returncode == 0, done.returncode
    assert done.stdout.strip() == b"RefusedPayload", done.stdout


def test_a_request_that_would_hash_a_container_is_refused_and_the_others_served(served):
    """The real path, with a key that hashes at once: refused before it is read, hung up on."""
    serving, authkey = served
    other = connect(serving.address, authkey)
    cart = other.new_cart()
    conn = _attach(serving, authkey)
    try:
        conn.send_bytes(_ENVELOPE + _x("new_cart") + b")}" + _dag(2) + b"Nst.")
        kind, error = _raw_answer(conn)
        assert kind == "#ERROR" and isinstance(error, InvalidArgumentError), (kind, error)
        assert "a dict key or a set item that is not a scalar" in str(error)
        assert _hung_up(conn)
    finally:
        conn.close()
    assert other.add_many(cart, Tea("Linden", 9, "Herbal"), 0) == 0  # served on
    other.disconnect()
    _serves_and_balances(serving, authkey)


def test_a_keyword_call_of_a_stock_proxy_is_still_read():
    """Keyword names are strings: a dict of them hashes nothing costly."""
    data = pickle.dumps((MARKET_IDENT, "publish", (0, Tea("Kw", 1, "x")), {"timeout": 0.5}))
    assert load_request(data)[3] == {"timeout": 0.5}


def test_a_rogue_answer_that_would_hash_a_container_is_refused(rogue):
    authkey = new_authkey()
    server = rogue(b"\x80\x02" + _x("#RETURN") + b"}" + _dag(2) + b"K\x01s\x86.", authkey)
    market = connect(server.address, authkey, timeout=CALL_S)
    with pytest.raises(UnsafeReplyError, match="a dict key or a set item that is not a scalar"):
        market.books()
    market.disconnect()


@pytest.mark.parametrize("levels", [40])
def test_a_rogue_answer_of_a_shared_key_does_not_hang_the_client(levels, tmp_path):
    """2**40 hashes if read: in a child process, bounded."""
    answer = b"\x80\x02" + _x("#RETURN") + b"}" + _dag(levels) + b"K\x01s\x86."
    done = _read_in_child("load_reply", answer, tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == b"UnsafeReplyError", done


_HASHING_OPCODES = {"SETITEM", "SETITEMS", "DICT", "ADDITEMS", "FROZENSET"}
_LONG_LENGTHS = {
    "BINUNICODE",
    "BINUNICODE8",
    "BINBYTES",
    "BINBYTES8",
    "BINSTRING",
    "LONG4",
    "BYTEARRAY8",
}

_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=300)
    | st.binary(max_size=300)
    | st.sampled_from([Tea("Linden", 9, "Herbal"), Coffee("Arabica", 3, 4.5, "DARK")]),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=4).map(tuple)
        | st.dictionaries(
            st.text(max_size=4) | st.integers() | st.tuples(st.integers()), inner, max_size=3
        )
        | st.frozensets(st.integers() | st.text(max_size=3), max_size=3)
        | st.sets(st.integers(), max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=400, deadline=None)
@given(_values, st.integers(0, pickle.HIGHEST_PROTOCOL))
def test_the_no_hashing_pattern_reads_opcodes_as_the_unpickler_does(value, protocol):
    """Exact both ways: a match holds no hashing opcode; a pickle with none matches."""
    data = pickle.dumps(value, protocol)
    names = {op.name for op, _, _ in pickletools.genops(data)}
    if NO_HASHING.fullmatch(data):
        assert not names & _HASHING_OPCODES
    elif not names & (_HASHING_OPCODES | _LONG_LENGTHS):
        pytest.fail(f"a pickle without a hashing opcode was not matched: {data!r}")
