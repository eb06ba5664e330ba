"""A proxy never takes an answer for another request, nor one from another market.

Issue 14, section 4. Each test goes through a real server on loopback (or a
scripted peer speaking the manager's wire format, for answers a real server
never sends), and interruptions are real signals in a subprocess of its own
(this process's SIGALRM belongs to pytest-timeout). After an interrupted
call, the next call either raises a named error or returns its own answer.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import signal
import struct
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing import connection
from typing import Any

import pytest

from mpmarket import __version__
from mpmarket.core.books import MarketBooks
from mpmarket.errors import MarketChangedError, MarketUnavailableError
from mpmarket.net.client import connect
from mpmarket.net.server import new_authkey, start_server
from mpmarket.net.wire import PROTOCOL_VERSION
from mpmarket.products import Tea
from tests.net.remote_helpers import free_port

pytestmark = pytest.mark.timeout(120)

LINDEN = Tea("Linden", 9, "Herbal")
SCRIPT_TIMEOUT_S = 90

# The start of every script: a server process of its own, a proxy to it.
_PROLOGUE = """
import json, multiprocessing, os, signal, sys, threading, time
from mpmarket.net.client import connect
from mpmarket.net.server import new_authkey, start_server
from mpmarket.products import Tea
LINDEN = Tea("Linden", 9, "Herbal")
key = new_authkey()
manager = start_server(2, authkey=key, ctx=multiprocessing.get_context("fork"))
proxy = connect(manager.address, key)
out = {}
def shape(value):
    return [type(value).__name__, value if isinstance(value, (int, bool, list)) else None]
"""

_EPILOGUE = """
manager.shutdown()
print(json.dumps(out))
"""


def _run_script(body: str) -> dict[str, Any]:
    """Run the prologue, ``body`` and the epilogue in a fresh interpreter; its JSON line."""
    code = _PROLOGUE + textwrap.dedent(body) + _EPILOGUE
    with subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=SCRIPT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise
    assert process.returncode == 0, stderr
    return json.loads(stdout.strip().splitlines()[-1])


# How each kind of interruption reaches the blocked call, and what the caller sees.
INTERRUPTIONS = {
    # Ctrl-C: SIGINT's default handler raises KeyboardInterrupt in the main thread.
    "sigint": (
        "threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()",
        "KeyboardInterrupt",
    ),
    # A signal-based test timeout: a handler raising an exception of its own.
    "alarm": (
        "def on_alarm(signum, frame):\n"
        "    raise TimeoutError('test timed out')\n"
        "signal.signal(signal.SIGALRM, on_alarm)\n"
        "signal.setitimer(signal.ITIMER_REAL, 0.5)",
        "TimeoutError",
    ),
    # A supervisor's SIGTERM turned into SystemExit.
    "sigterm": (
        "def on_term(signum, frame):\n"
        "    raise SystemExit(143)\n"
        "signal.signal(signal.SIGTERM, on_term)\n"
        "threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM)).start()",
        "SystemExit",
    ),
}


@pytest.mark.parametrize("how", sorted(INTERRUPTIONS))
def test_after_an_interrupted_call_every_call_gets_its_own_answer(how):
    arm, raised = INTERRUPTIONS[how]
    body = f"""
cart = proxy.new_cart()
{arm}
try:
    out["interrupted"] = shape(proxy.add_many(cart, LINDEN, 5, 3))
except BaseException as error:
    out["interrupted"] = type(error).__name__
out["books"] = proxy.books().carts
out["new_cart"] = shape(proxy.new_cart())
out["register_producer"] = shape(proxy.register_producer())
out["publish"] = shape(proxy.publish(0, LINDEN))
out["add_many"] = shape(proxy.add_many(cart, LINDEN, 3, 0.2))
out["place_order"] = [p.name for p in proxy.place_order(cart)]
out["books_after"] = proxy.books().balanced
time.sleep(0.5)  # the dropped connection's end reaches the server
out["connections"] = len(proxy.agents())
"""
    out = _run_script(body)
    assert out["interrupted"] == raised
    assert out["books"] == 1  # a MarketBooks, with its one cart: not add_many's 0
    assert out["new_cart"] == ["int", 1]
    assert out["register_producer"] == ["int", 0]
    assert out["publish"] == ["bool", True]
    assert out["add_many"] == ["int", 1]
    assert out["place_order"] == ["Linden"]
    assert out["books_after"] is True
    assert out["connections"] == 1  # the out-of-step connection was dropped


def test_a_call_from_a_signal_handler_during_a_call_is_refused_and_both_stay_in_step():
    body = """
cart = proxy.new_cart()
def on_alarm(signum, frame):
    try:
        out["nested"] = shape(proxy.books())
    except RuntimeError as error:
        out["nested"] = str(error)
signal.signal(signal.SIGALRM, on_alarm)
signal.setitimer(signal.ITIMER_REAL, 0.3)
out["outer"] = shape(proxy.add_many(cart, LINDEN, 2, 1.5))
out["next"] = shape(proxy.new_cart())
"""
    out = _run_script(body)
    assert "waits for its answer" in out["nested"]
    assert out["outer"] == ["int", 0]  # its own answer: nothing was on sale
    assert out["next"] == ["int", 1]


def test_a_forked_child_never_uses_its_parents_connection():
    body = """
proxy.new_cart()
parent_fd = proxy._tls.connection.fileno()
pid = os.fork()
if pid == 0:  # the child: a connection of its own, answers of its own
    code = 0
    try:
        carts = [proxy.new_cart() for _ in range(200)]
        books = proxy.books()
        if carts != sorted(set(carts)) or not books.balanced:
            code = 3
    except BaseException:
        code = 5
    os._exit(code)
carts = [proxy.new_cart() for _ in range(200)]
_, status = os.waitpid(pid, 0)
out["child"] = os.waitstatus_to_exitcode(status)
out["parent_in_order"] = carts == sorted(set(carts))
out["parent_kept_its_connection"] = proxy._tls.connection.fileno() == parent_fd
out["carts"] = proxy.books().carts
"""
    out = _run_script(body)
    assert out["child"] == 0
    assert out["parent_in_order"] is True
    assert out["parent_kept_its_connection"] is True
    assert out["carts"] == 401


# -- real servers in this process's children -------------------------------------


@pytest.fixture
def served():
    authkey = new_authkey()
    manager = start_server(2, authkey=authkey, ctx=multiprocessing.get_context("fork"))
    try:
        yield manager.address, authkey
    finally:
        manager.shutdown()


def test_threads_sharing_a_proxy_each_get_their_own_answers(served):
    market = connect(*served)
    errors: list[str] = []

    def shopper(number: int) -> None:
        product = Tea(f"tea-{number}", number, "Green")
        try:
            for _ in range(30):
                producer = market.register_producer()
                cart = market.new_cart()
                assert type(producer) is int and type(cart) is int
                assert market.publish(producer, product) is True
                assert market.add_many(cart, product, 1, 5.0) == 1
                assert market.place_order(cart) == [product]
                assert isinstance(market.books(), MarketBooks)
        except BaseException as error:  # reported below, with the thread
            errors.append(f"{number}: {error!r}")

    threads = [threading.Thread(target=shopper, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    books = market.books()
    assert (books.ordered, books.balanced) == (180, True)


def test_a_server_restarted_on_the_same_address_is_noticed():
    port = free_port()
    authkey = new_authkey()
    ctx = multiprocessing.get_context("fork")
    first = start_server(2, authkey=authkey, address=("127.0.0.1", port), ctx=ctx)
    try:
        market = connect(first.address, authkey)
        idle = connect(first.address, authkey)
        idle.disconnect()  # no connection open while the server restarts
        cart = market.new_cart()
        first_id = market.market_id
    finally:
        first.shutdown()
    second = start_server(2, authkey=authkey, address=("127.0.0.1", port), ctx=ctx)
    try:
        newcomer = connect(second.address, authkey)
        assert newcomer.market_id not in (None, first_id)
        producer = newcomer.register_producer()
        assert newcomer.new_cart() == cart  # the same id, another market's cart
        assert newcomer.publish(producer, LINDEN)
        with pytest.raises(MarketUnavailableError):  # its connection went with the server
            market.add_to_cart(cart, LINDEN)
        for _ in range(2):  # and every later call: never the new market's answer
            with pytest.raises(MarketChangedError, match="not the one this proxy attached to"):
                market.add_to_cart(cart, LINDEN)
        with pytest.raises(MarketChangedError):
            idle.books()
        assert newcomer.books().on_sale == 1  # nothing reached the new market
    finally:
        second.shutdown()


def test_a_proxy_does_not_pickle(served):
    market = connect(*served)
    with pytest.raises(TypeError, match=r"mpmarket\.connect\(\) in the other process"):
        pickle.dumps(market)


def test_an_argument_that_does_not_pickle_leaves_the_connection_in_step(served):
    market = connect(*served)
    conn = market._tls.connection
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        market.add_many(market.new_cart(), lambda: None, 1)  # type: ignore[arg-type]
    assert market._tls.connection is conn
    assert market.new_cart() == 1


# -- a scripted peer: answers no mpmarket server sends ---------------------------

_KEY = b"a-scripted-peer-key-0123456789"


def _long_pickle(obj: object) -> bytes:
    return pickle.dumps(obj, pickle.HIGHEST_PROTOCOL)


@contextmanager
def scripted_peer(answers: list[Callable[[connection.Connection], None]]) -> Iterator[Any]:
    """A peer that shakes hands, says hello as a server does, then plays ``answers``.

    Each connection gets the handshake and hello; then, for each request, the
    next scripted answer (a function writing to the connection). When the
    script runs out, it answers every request as a market would for
    ``new_cart`` (an int). Serves connections one after another.
    """
    listener = connection.Listener(("127.0.0.1", 0), authkey=_KEY)
    script = list(answers)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn = listener.accept()
            except OSError:
                return
            try:
                conn.recv()  # accept_connection
                conn.send(("#RETURN", None))
                conn.recv()  # hello
                conn.send(("#RETURN", (__version__, PROTOCOL_VERSION, "scripted-market")))
                while True:
                    conn.recv()
                    if script:
                        script.pop(0)(conn)
                    else:
                        conn.send(("#RETURN", 7))
            except (EOFError, OSError):
                pass
            finally:
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.address
    finally:
        stop.set()
        listener.close()


def _send(obj: object) -> Callable[[connection.Connection], None]:
    return lambda conn: conn.send(obj)


def _send_bytes(data: bytes) -> Callable[[connection.Connection], None]:
    return lambda conn: conn.send_bytes(data)


def _half_then_hang_up(conn: connection.Connection) -> None:
    payload = _long_pickle(("#RETURN", 1))
    conn._send(struct.pack("!i", len(payload)) + payload[:3])  # type: ignore[attr-defined]
    conn.close()


def _unknown_class() -> bytes:
    # ("#RETURN", nowhere.Thing()) as a pickle: the class cannot be found here.
    return b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00(\x8c\x07#RETURN\x8c\x07nowhere\x8c\x05Thing\x93)R\x86."


WRONG = {
    "another call's type": (
        _send(("#RETURN", MarketBooks(2, 0, 0, 0, 0, 0, 0, 0, (), (), 0, 0, False))),
        "answered new_cart with",
    ),
    "a bool for a count": (_send(("#RETURN", True)), "answered new_cart with"),
    "not a pair": (_send(("#RETURN", 1, 2)), "answered new_cart with"),
    "not a tuple": (_send(["#RETURN", 1]), "answered new_cart with"),
    "a proxy": (_send(("#PROXY", ("Marketplace", None))), "answered new_cart with"),
    "an error that is no exception": (_send(("#ERROR", "boom")), "answered new_cart with"),
    "a class not here": (
        _send_bytes(_unknown_class()),
        "refused an answer of the server",
    ),  # net.safe_pickle
    "garbage": (_send_bytes(b"\x00\x01not a pickle"), "could not be read"),
    "half an answer": (_half_then_hang_up, "lost the market"),
}


@pytest.mark.parametrize("case", sorted(WRONG))
def test_an_answer_of_the_wrong_shape_drops_the_connection(case):
    answer, message = WRONG[case]
    with scripted_peer([answer]) as address:
        market = connect(address, _KEY, timeout=10)
        first = market._tls.connection
        with pytest.raises(MarketUnavailableError, match=message):
            market.new_cart()
        assert getattr(market._tls, "connection", None) is None
        assert first.closed
        assert market.new_cart() == 7  # a fresh connection, in step
