"""Only the market's own types cross the wire: real payloads over loopback, both ways.

Each hostile request goes over a raw loopback socket, framed as the manager
frames it, after the real handshake with the key (as ``test_loop.py`` does):
the market is served in this process, so a payload that ran would create its
marker file here, and a ``copyreg`` extension code registered here would be
seen by the server. After each: nothing ran, the sender was answered and
hung up on (or answered as for a bad argument), everyone else is served, the
books balance. The reverse direction: a rogue server, a few lines of the
standard library in a thread, sends hostile answers to mpmarket's client.
"""

from __future__ import annotations

import contextlib
import copyreg
import functools
import logging
import multiprocessing
import os
import pickle
import pickletools
import socket
import struct
import subprocess
import threading
import time
from multiprocessing import connection, managers
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpmarket import __version__
from mpmarket.errors import InvalidArgumentError, UnknownCartError, UnsafeReplyError
from mpmarket.net.client import connect, open_connection
from mpmarket.net.safe_pickle import (
    _LITERAL_ONLY,
    MAX_DEPTH,
    MEMO_MESSAGE_BYTES,
    REPLY_NAMES,
    ReadMemo,
    RefusedPayload,
    load_reply,
    load_request,
)
from mpmarket.net.server import ServedMarket, new_authkey, start_server
from mpmarket.net.wire import MARKET_IDENT, PROTOCOL_VERSION
from mpmarket.products import PRODUCT_TYPES, Coffee, ProductStateError, Tea

LINDEN = Tea("Linden", 9, "Herbal")
ARABICA = Coffee("Arabica", 3, 4.5, "DARK")
CALL_S = 10.0  # a generous bound on any single answer
DEEP = 100_000


# -- payloads ---------------------------------------------------------------------


class _Reduce:
    """Pickles as ``func(*args)``: what a hostile client sends."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func = func
        self.args = args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (self.func, self.args)


def _touch(marker: Path) -> str:
    return f"touch {marker}"


def _frame(payload: bytes) -> bytes:
    return struct.pack("!i", len(payload)) + payload


def _request_with(argument: bytes) -> bytes:
    """A protocol-0 request ``("market", "new_cart", (ARGUMENT,), {})``, by hand.

    ``argument`` is pickle code that pushes one object: the hostile part.
    """
    return b"(S'market'\nS'new_cart'\n(" + argument + b"t(dt."


def _dumped(obj: Any) -> bytes:
    return pickle.dumps((MARKET_IDENT, "new_cart", (obj,), {}), pickle.HIGHEST_PROTOCOL)


def _hostile_payloads(marker: Path) -> dict[str, bytes]:
    """Requests that would run ``touch MARKER`` (or build what they must not)."""
    touch = _touch(marker)
    return {
        "os.system": _dumped(_Reduce(os.system, touch)),
        "subprocess.Popen": _dumped(_Reduce(subprocess.Popen, ["touch", str(marker)])),
        "eval": _dumped(_Reduce(eval, f"__import__('os').system({touch!r})")),
        "exec": _dumped(_Reduce(exec, f"open({str(marker)!r}, 'w').close()")),
        "builtins.getattr chain": _request_with(
            b"cbuiltins\ngetattr\n(cbuiltins\n__import__\n(S'os'\ntRS'system'\ntR(S'"
            + touch.encode()
            + b"'\ntR"
        ),
        "functools.partial": _dumped(functools.partial(os.system, touch)),
        "copyreg._reconstructor": _request_with(
            b"ccopyreg\n_reconstructor\n(cos\n_wrap_close\ncbuiltins\nobject\nNtR"
        ),
        "INST opcode": _request_with(b"(S'" + touch.encode() + b"'\nios\nsystem\n"),
        "OBJ opcode": _request_with(b"(cos\nsystem\nS'" + touch.encode() + b"'\no"),
        "persistent id": _request_with(b"P" + touch.encode() + b"\n"),
        "a product class's module, another name": _request_with(
            b"cmpmarket.products\nproduct_from_spec\n(tR"
        ),
        "a name that only looks allowed": _request_with(b"cmpmarket.products\nTea.__init__\n"),
        "BUILD on an allowed product: a field swapped": _request_with(
            b"cmpmarket.products\nTea\n(S'a'\nI1\nS'x'\ntR(dS'name'\n(lp1\nS'list'\nasb"
        ),
        "BUILD on an allowed product: a forged hash": _request_with(
            b"cmpmarket.products\nTea\n(S'a'\nI1\nS'x'\ntR(dS'_hash'\nI5\nsb"
        ),
        "NEWOBJ on an allowed product, its state by BUILD": (
            b"\x80\x02(X\x06\x00\x00\x00marketX\x08\x00\x00\x00new_cart"
            b"cmpmarket.products\nTea\n)\x81}(X\x04\x00\x00\x00nameX\x01\x00\x00\x00a"
            b"X\x05\x00\x00\x00priceK\x01X\x04\x00\x00\x00typeX\x01\x00\x00\x00xub\x85}t."
        ),
    }


# -- the served market -------------------------------------------------------------


def _attach(serving: ServedMarket, authkey: bytes) -> connection.Connection:
    conn = open_connection(serving.address, authkey, time.monotonic() + CALL_S)
    managers.dispatch(conn, None, "accept_connection", ("hostile",))
    return conn


def _raw_answer(conn: connection.Connection) -> tuple[str, Any]:
    """The next answer, read with the plain unpickler (a test trusts its server)."""
    assert conn.poll(CALL_S), "no answer in time"
    return pickle.loads(conn.recv_bytes())


def _hung_up(conn: connection.Connection) -> bool:
    if not conn.poll(CALL_S):
        return False
    try:
        conn.recv_bytes()
    except (EOFError, ConnectionError):
        return True
    return False


def _refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "refused a request" in r.getMessage()]


def _serves_and_balances(serving: ServedMarket, authkey: bytes) -> None:
    market = connect(serving.address, authkey)
    producer = market.register_producer()
    assert market.publish(producer, LINDEN)
    cart = market.new_cart()
    assert market.add_many(cart, LINDEN, 1) == 1
    assert market.place_order(cart) == [LINDEN]
    books = market.books()
    assert books.balanced and not market.audit()
    market.disconnect()


@pytest.mark.parametrize("name", list(_hostile_payloads(Path("x"))))
def test_a_hostile_request_is_refused_unbuilt_and_everyone_else_is_served(
    served, name, tmp_path, caplog
):
    serving, authkey = served
    marker = tmp_path / "ran"
    payload = _hostile_payloads(marker)[name]
    other = connect(serving.address, authkey)
    other_cart = other.new_cart()
    conn = _attach(serving, authkey)
    try:
        with caplog.at_level(logging.WARNING):
            conn.send_bytes(payload)
            kind, error = _raw_answer(conn)
            assert _hung_up(conn)
    finally:
        conn.close()
    assert kind == "#ERROR" and isinstance(error, InvalidArgumentError), (kind, error)
    assert str(error).startswith("request refused: ")
    assert "only the market's own types cross the wire" in str(error)
    time.sleep(0.2)  # a payload that ran in a thread would have had the time
    assert not marker.exists()
    (line,) = _refusals(caplog)
    assert "127.0.0.1" in line and "\n" not in line and authkey.hex() not in line
    assert serving._server.loop.refused_payloads == 1
    assert other.add_many(other_cart, LINDEN, 0) == 0  # the other connection lives on
    _serves_and_balances(serving, authkey)


def test_an_extension_code_resolves_through_the_allow_list(served, tmp_path):
    """EXT2 names a registered (module, name) pair: refused as its GLOBAL would be."""
    serving, authkey = served
    marker = tmp_path / "ran"
    code = 0x7E57
    copyreg.add_extension("os", "system", code)
    try:
        conn = _attach(serving, authkey)
        try:
            conn.send_bytes(
                _request_with(
                    b"\x83"
                    + struct.pack("<H", code)
                    + b"(S'touch "
                    + str(marker).encode()
                    + b"'\ntR"
                )
            )
            kind, error = _raw_answer(conn)
        finally:
            conn.close()
    finally:
        copyreg.remove_extension("os", "system", code)
    assert kind == "#ERROR" and "'os.system' is not a type" in str(error)
    assert not marker.exists()
    _serves_and_balances(serving, authkey)


@pytest.mark.parametrize(
    "product",
    [
        Tea(["a", "list"], 1, "x"),  # type: ignore[arg-type]
        Tea("a", {"a": "dict"}, "x"),  # type: ignore[arg-type]
        Tea("a", 1, LINDEN),  # type: ignore[arg-type]
        Tea("a", True, "x"),
        Coffee("a", 1, 2, b"bytes"),  # type: ignore[arg-type]
        Tea("a", 1.5, None),  # type: ignore[arg-type]
    ],
    ids=["list-name", "dict-price", "product-type", "bool-price", "bytes-roast", "none-type"],
)
def test_a_product_whose_fields_are_not_scalars_is_a_bad_argument(served, product):
    serving, authkey = served
    conn = _attach(serving, authkey)
    try:
        producer = managers.dispatch(conn, MARKET_IDENT, "register_producer")
        conn.send((MARKET_IDENT, "publish", (producer, product), {}))
        kind, error = _raw_answer(conn)
        assert kind == "#ERROR" and isinstance(error, InvalidArgumentError)
        assert "must be a" in str(error)
        assert managers.dispatch(conn, MARKET_IDENT, "books").published == 0  # it lives on
    finally:
        conn.close()
    _serves_and_balances(serving, authkey)


def _deep_list(depth: int) -> bytes:
    """Pickle code pushing a list nested ``depth`` deep (no pickler would recurse so far)."""
    return b"]" * depth + b"a" * (depth - 1)


@pytest.mark.parametrize("where", ["argument", "keyword", "ident", "method", "product field"])
def test_a_100k_deep_nesting_does_not_crash_the_server(served, where):
    serving, authkey = served
    deep = _deep_list(DEEP)
    requests = {
        "argument": b"\x80\x02(X\x06\x00\x00\x00marketX\x08\x00\x00\x00new_cart"
        + deep
        + b"\x85}t.",
        "keyword": b"\x80\x02(X\x06\x00\x00\x00marketX\x08\x00\x00\x00new_cart)}X\x01\x00\x00\x00k"
        + deep
        + b"st.",
        "ident": b"\x80\x02(" + deep + b"X\x08\x00\x00\x00new_cart)}t.",
        "method": b"\x80\x02(X\x06\x00\x00\x00market" + deep + b")}t.",
        "product field": b"\x80\x02(X\x06\x00\x00\x00marketX\x07\x00\x00\x00publishK\x00"
        b"cmpmarket.products\nTea\n" + deep + b"K\x01X\x01\x00\x00\x00x\x87R\x86}t.",
    }
    request = requests[where]
    conn = _attach(serving, authkey)
    try:
        conn.send_bytes(request)
        kind, answer = _raw_answer(conn)
        assert kind in ("#ERROR", "#TRACEBACK")
        if where in ("argument", "keyword", "product field"):
            assert isinstance(answer, InvalidArgumentError)
        assert managers.dispatch(conn, MARKET_IDENT, "new_cart") == 0  # it lives on
    finally:
        conn.close()
    _serves_and_balances(serving, authkey)


def test_a_container_argument_within_the_depth_is_the_market_s_to_refuse(served):
    serving, authkey = served
    market = connect(serving.address, authkey)
    nested: Any = "x"
    for _ in range(MAX_DEPTH):
        nested = [nested]
    with pytest.raises(InvalidArgumentError, match="product must be a Product"):
        market.publish(market.register_producer(), nested)
    with pytest.raises(InvalidArgumentError, match=f"deeper than {MAX_DEPTH}"):
        market.publish(0, [nested])
    assert market.books().balanced


def test_a_hostile_first_request_in_the_handshake_is_refused(served, tmp_path, caplog):
    """The request that should be ``accept_connection`` is read with the allow-list too."""
    serving, authkey = served
    marker = tmp_path / "ran"
    conn = open_connection(serving.address, authkey, time.monotonic() + CALL_S)
    try:
        with caplog.at_level(logging.WARNING):
            conn.send_bytes(
                pickle.dumps((None, "accept_connection", (_Reduce(os.system, _touch(marker)),), {}))
            )
            kind, error = _raw_answer(conn)
            assert _hung_up(conn)
    finally:
        conn.close()
    assert kind == "#ERROR" and "request refused" in str(error)
    assert not marker.exists() and len(_refusals(caplog)) == 1
    _serves_and_balances(serving, authkey)


def test_a_hostile_request_is_refused_by_a_local_run_s_server_process(tmp_path):
    """The same in the server process ``start_server`` forks for a local run."""
    marker = tmp_path / "ran"
    authkey = new_authkey()
    manager = start_server(2, authkey=authkey, ctx=multiprocessing.get_context("fork"))
    try:
        conn = open_connection(manager.address, authkey, time.monotonic() + CALL_S)
        managers.dispatch(conn, None, "accept_connection", ("hostile",))
        conn.send_bytes(_hostile_payloads(marker)["os.system"])
        kind, error = _raw_answer(conn)
        conn.close()
        assert kind == "#ERROR" and "request refused" in str(error)
        market = connect(manager.address, authkey)
        assert market.new_cart() == 0 and market.books().balanced
        market.disconnect()
    finally:
        manager.shutdown()
    assert not marker.exists()


# -- the reverse: a rogue server ---------------------------------------------------


class _RogueServer:
    """Answers the handshake and the hello as a market would, then ``answer`` to any call."""

    def __init__(self, answer: bytes, authkey: bytes, *, at_hello: bool = False) -> None:
        self.answer = answer
        self.at_hello = at_hello
        self.listener = connection.Listener(("127.0.0.1", 0), authkey=authkey)
        self.address = self.listener.address
        self.closing = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:  # a client drops a connection that answered wrong, and comes back
            try:
                conn = self.listener.accept()
            except (OSError, EOFError, multiprocessing.AuthenticationError):
                if self.closing:
                    return
                continue
            if self.closing:
                conn.close()
                return
            with conn:
                self._answer(conn)

    def _answer(self, conn: connection.Connection) -> None:
        while True:
            try:
                _, method, _, _ = pickle.loads(conn.recv_bytes())
            except (EOFError, OSError):
                return
            if method == "accept_connection":
                conn.send(("#RETURN", None))
            elif method == "hello" and not self.at_hello:
                conn.send(("#RETURN", (__version__, PROTOCOL_VERSION, "rogue-market")))
            else:
                conn.send_bytes(self.answer)

    def close(self) -> None:
        """Stop: a connection wakes ``accept`` (closing the listener would not)."""
        self.closing = True
        with contextlib.suppress(OSError):
            socket.create_connection(self.address, timeout=CALL_S).close()
        self.thread.join(CALL_S)
        self.listener.close()
        assert not self.thread.is_alive()


def _hostile_answers(marker: Path) -> dict[str, bytes]:
    touch = _touch(marker)
    return {
        "os.system": pickle.dumps(("#RETURN", _Reduce(os.system, touch))),
        "subprocess.Popen": pickle.dumps(
            ("#RETURN", _Reduce(subprocess.Popen, ["touch", str(marker)]))
        ),
        "eval": pickle.dumps(("#RETURN", _Reduce(eval, f"__import__('os').system({touch!r})"))),
        "functools.partial in an error": pickle.dumps(
            ("#ERROR", functools.partial(os.system, touch))
        ),
        "SystemExit as the error": pickle.dumps(("#ERROR", SystemExit(3))),
        "KeyboardInterrupt as the error": pickle.dumps(("#ERROR", KeyboardInterrupt())),
        "a managers.Token (a #PROXY)": pickle.dumps(
            ("#PROXY", ((), managers.Token("x", ("h", 1), "1")))
        ),
        "a tampered product in a list": b"\x80\x02X\x07\x00\x00\x00#RETURN]cmpmarket.products\nTea\n"
        b"(X\x01\x00\x00\x00aK\x01X\x01\x00\x00\x00xtR}X\x05\x00\x00\x00_hashK\x05sba\x86.",
        "a product whose name is a list": pickle.dumps(("#RETURN", [Tea(["a"], 1, "x")])),  # type: ignore[arg-type]
        "persistent id": b"(S'#RETURN'\nPx\nt.",
    }


@pytest.mark.parametrize("name", list(_hostile_answers(Path("x"))))
def test_a_rogue_server_s_answer_is_refused_unbuilt_by_the_client(rogue, name, tmp_path):
    marker = tmp_path / "ran"
    authkey = new_authkey()
    server = rogue(_hostile_answers(marker)[name], authkey)
    market = connect(server.address, authkey, timeout=CALL_S)
    with pytest.raises(UnsafeReplyError, match="refused an answer of the server"):
        market.books()
    with pytest.raises(UnsafeReplyError):  # every answer, not only the first
        market.new_cart()
    market.disconnect()
    time.sleep(0.2)
    assert not marker.exists()


def test_a_rogue_server_is_refused_at_hello_too(rogue, tmp_path):
    marker = tmp_path / "ran"
    authkey = new_authkey()
    server = rogue(_hostile_answers(marker)["os.system"], authkey, at_hello=True)
    with pytest.raises(UnsafeReplyError):
        connect(server.address, authkey, timeout=CALL_S)
    assert not marker.exists()


# -- the lists themselves ----------------------------------------------------------


def test_every_answer_the_market_gives_is_on_the_answer_list(served):
    """A real market's answers all load: the snapshots, products, errors, agents."""
    serving, authkey = served
    market = connect(serving.address, authkey, name="lists")
    producer = market.register_producer()
    market.publish(producer, LINDEN)
    market.publish(producer, Coffee("Arabica", 3, 4, "DARK"))
    cart = market.new_cart()
    market.add_many(cart, LINDEN, 1, 0.01)
    market.add_many(cart, Coffee("Arabica", 3, 4, "DARK"), 1)
    assert market.snapshot().published == 2
    assert market.waits().queue_size_per_producer == 3
    assert market.agents()[0].name == "lists"
    assert market.place_order(cart)[0] == LINDEN
    with pytest.raises(UnknownCartError):
        market.place_order(99)
    with pytest.raises(InvalidArgumentError):
        market.add_many(cart, LINDEN, -1)
    conn = _attach(serving, authkey)  # a builtin exception the server sends back
    with pytest.raises(TypeError):
        managers.dispatch(conn, MARKET_IDENT, "new_cart", (1, 2))
    conn.close()


def test_the_lists_name_only_what_exists_and_no_process_exits():
    import importlib

    for module, name in REPLY_NAMES:
        assert hasattr(importlib.import_module(module), name), (module, name)
    assert ("builtins", "SystemExit") not in REPLY_NAMES
    assert ("builtins", "KeyboardInterrupt") not in REPLY_NAMES
    for cls in PRODUCT_TYPES.values():
        assert ("mpmarket.products", cls.__name__) in REPLY_NAMES


@pytest.mark.parametrize("product", [LINDEN, Coffee("Arabica", 3.5, 4, "DARK")])
def test_products_round_trip_both_ways(product):
    request = load_request(pickle.dumps((MARKET_IDENT, "publish", (0, product), {})))
    assert request[2][1] == product and hash(request[2][1]) == hash(product)
    answer = load_reply(pickle.dumps(("#RETURN", [product, product])))
    assert answer == ("#RETURN", [product, product])


# -- the memos: what was read, by the bytes read ----------------------------------


def test_a_request_read_again_is_the_same_and_its_arguments_are_shared():
    data = pickle.dumps((MARKET_IDENT, "publish", (0, Tea("Memo", 1, "x")), {}))
    first, again = load_request(data), load_request(bytearray(data))
    assert again is first and again[2][1] == Tea("Memo", 1, "x")


def test_a_request_with_a_container_argument_is_read_anew_each_time():
    data = pickle.dumps((MARKET_IDENT, "new_cart", ([1, 2],), {}))
    first, again = load_request(data), load_request(data)
    assert first == again and again[2][0] is not first[2][0]  # nobody shares a list


def test_a_refused_request_is_refused_again_not_remembered(tmp_path):
    payload = _hostile_payloads(tmp_path / "ran")["os.system"]
    for _ in range(2):
        with pytest.raises(RefusedPayload):
            load_request(payload)
    assert not (tmp_path / "ran").exists()


def test_an_order_read_again_is_a_new_list_of_the_same_products():
    data = pickle.dumps(("#RETURN", [Tea("Memo", 2, "x"), ARABICA]))
    first = load_reply(data)
    first[1].clear()  # the caller's to change
    again = load_reply(data)
    assert again == ("#RETURN", [Tea("Memo", 2, "x"), ARABICA])
    assert again[1] is not first[1]


def test_a_product_s_fields_keep_their_types_in_the_memo():
    one = load_reply(pickle.dumps(("#RETURN", [Tea("Memo", 1, "x")])))[1][0]
    one_float = load_reply(pickle.dumps(("#RETURN", [Tea("Memo", 1.0, "x")])))[1][0]
    assert type(one.price) is int and type(one_float.price) is float


def test_a_product_takes_no_state_from_a_pickle():
    build = b"cmpmarket.products\nTea\n(S'a'\nI1\nS'x'\ntR(dS'_hash'\nI5\nsb."
    with pytest.raises(ProductStateError):
        pickle.loads(build)
    # What mpmarket does with products still works: no state in any of it.
    import copy

    assert copy.copy(LINDEN) == copy.deepcopy(LINDEN) == pickle.loads(pickle.dumps(LINDEN))


def test_a_read_memo_is_bounded():
    memo: ReadMemo[int, int] = ReadMemo(3)
    for key in range(10):
        memo.keep(key, key)
        assert len(memo) <= 3
    assert memo.get(9) == 9 and memo.get(0) is None


def test_a_message_over_the_memo_s_size_is_read_and_not_kept():
    order = [Tea(f"Long{i}", i, "x") for i in range(40)]
    data = pickle.dumps(("#RETURN", order))
    assert len(data) > MEMO_MESSAGE_BYTES
    assert load_reply(data)[1] == order == load_reply(data)[1]


def test_a_rogue_server_cannot_write_a_product_a_client_holds(rogue):
    """A product read once is shared by later answers: a BUILD on it is refused, unwritten."""
    authkey = new_authkey()
    held = Tea("Held", 7, "x")
    honest = rogue(pickle.dumps(("#RETURN", [held])), authkey)
    market = connect(honest.address, authkey, timeout=CALL_S)
    (bought,) = market.place_order(0)
    market.disconnect()
    assert bought == held
    fields_before, hash_before = bought.__dict__["_key"], hash(bought)
    forged = (  # the same Tea, made by REDUCE, then BUILD with a new name and hash
        b"\x80\x02X\x07\x00\x00\x00#RETURN]cmpmarket.products\nTea\n"
        b"(X\x04\x00\x00\x00HeldK\x07X\x01\x00\x00\x00xtR}(X\x04\x00\x00\x00name"
        b"X\x06\x00\x00\x00ForgedX\x05\x00\x00\x00_hashK\x05uba\x86."
    )
    hostile = rogue(forged, authkey)
    market = connect(hostile.address, authkey, timeout=CALL_S)
    with pytest.raises(UnsafeReplyError, match="made from its fields"):
        market.place_order(0)
    market.disconnect()
    assert bought.name == "Held" and bought.__dict__["_key"] == fields_before
    assert hash(bought) == hash_before == hash(Tea("Held", 7, "x"))
    assert load_reply(pickle.dumps(("#RETURN", [held])))[1][0].name == "Held"


# -- the fast path: literals only ------------------------------------------------

_REACHING_OPCODES = {
    "GLOBAL",
    "STACK_GLOBAL",
    "INST",
    "OBJ",
    "REDUCE",
    "BUILD",
    "NEWOBJ",
    "NEWOBJ_EX",
    "EXT1",
    "EXT2",
    "EXT4",
    "PERSID",
    "BINPERSID",
}

_literals = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=8)
    | st.sampled_from(["market", "#RETURN", "publish", "session"]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        _literals,
        st.tuples(
            st.sampled_from(["market", "session"]),
            st.sampled_from(["new_cart", "hello"]),
            _literals,
            _literals,
        ),
        st.tuples(st.just("#RETURN"), _literals),
        st.tuples(_literals, st.sampled_from([LINDEN, ARABICA])),
    ),
    st.integers(0, pickle.HIGHEST_PROTOCOL),
)
def test_the_fast_path_takes_only_pickles_without_a_reaching_opcode(value, protocol):
    data = pickle.dumps(value, protocol)
    opcodes = {op.name for op, _, _ in pickletools.genops(data)}
    if _LITERAL_ONLY.fullmatch(data):
        assert not opcodes & _REACHING_OPCODES
    if opcodes & _REACHING_OPCODES:
        assert not _LITERAL_ONLY.fullmatch(data)


@pytest.mark.parametrize(
    "opcode",
    [
        b"c",
        b"i",
        b"o",
        b"b",
        b"R",
        b"P",
        b"Q",
        b"\x81",
        b"\x82",
        b"\x83",
        b"\x84",
        b"\x92",
        b"\x93",
    ],
)
def test_a_reaching_opcode_right_after_the_envelope_is_never_taken_for_literals(opcode):
    envelope = b"\x80\x05\x95" + bytes(8) + b"(\x8c\x06market\x94\x8c\x08new_cart\x94"
    assert _LITERAL_ONLY.fullmatch(envelope + b")}t.")
    assert not _LITERAL_ONLY.fullmatch(envelope + opcode + b")}t.")
