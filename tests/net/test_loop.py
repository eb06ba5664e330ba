"""The server's one serving thread, spoken to through raw loopback sockets.

The market is served in this process (``ServedMarket``), so a test can also
act on it from another thread, as the lease keeper does. Clients speak the
manager's own protocol with the standard library's ``managers.dispatch`` or
with bytes on a socket, to prove the framing, the order of answers and that
one slow or silent client never holds up the others.
"""

from __future__ import annotations

import os
import pickle
import socket
import struct
import threading
import time
from multiprocessing import connection, managers

import pytest

from mpmarket.core.market import Marketplace
from mpmarket.errors import CartRevokedError, MarketClosedError
from mpmarket.net import loop as dispatch
from mpmarket.net import server as server_module
from mpmarket.net.client import connect, open_connection
from mpmarket.net.server import ServedMarket, new_authkey
from mpmarket.net.wire import MARKET_IDENT
from mpmarket.products import Product, Tea

LINDEN = Tea("Linden", 9, "Herbal")
CALL_S = 10.0  # a generous bound on any single answer in these tests
BIG_LIMIT = 16 << 20


@pytest.fixture
def served():
    market = Marketplace(3)
    authkey = new_authkey()
    # Requests of a few MB (to outgrow socket buffers) over the default limit.
    serving = ServedMarket(market, ("127.0.0.1", 0), authkey, max_request_size=BIG_LIMIT)
    serving.start()
    try:
        yield serving, authkey
    finally:
        market.close()


def _attach(served) -> connection.Connection:
    """An authenticated connection accepted for serving, by the stock client calls."""
    serving, authkey = served
    conn = open_connection(serving.address, authkey, time.monotonic() + CALL_S)
    managers.dispatch(conn, None, "accept_connection", ("raw-test",))
    return conn


def _answer(conn: connection.Connection) -> tuple[str, object]:
    assert conn.poll(CALL_S), "no answer in time"
    return conn.recv()


def _frame(request: tuple) -> bytes:
    payload = pickle.dumps(request)
    return struct.pack("!i", len(payload)) + payload


def test_the_stock_dispatch_of_the_standard_library_is_served(served):
    conn = _attach(served)
    producer = managers.dispatch(conn, MARKET_IDENT, "register_producer")
    assert managers.dispatch(conn, MARKET_IDENT, "publish", (producer, LINDEN)) is True
    books = managers.dispatch(conn, MARKET_IDENT, "books")
    assert books.published == 1 and books.on_sale == 1


def test_served_connections_send_without_waiting_for_acknowledgements(served):
    serving, _ = served
    conn = _attach(served)
    assert managers.dispatch(conn, MARKET_IDENT, "audit") == []  # served by the loop now
    (client,) = serving._server.loop._clients
    assert client.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_requests_sent_behind_a_waiting_call_are_answered_after_it_in_order(served):
    serving, _ = served
    consumer = _attach(served)
    cart = managers.dispatch(consumer, MARKET_IDENT, "new_cart")
    # Three requests at once: the first waits in the market, the others queue.
    consumer.send((MARKET_IDENT, "add_many", (cart, LINDEN, 2, 30.0), {}))
    consumer.send((MARKET_IDENT, "place_order", (cart,), {}))
    consumer.send((MARKET_IDENT, "books", (), {}))
    assert not consumer.poll(0.2)  # nothing answered while the add waits
    producer = connect(serving.address, served[1])
    producer_id = producer.register_producer()
    assert producer.publish(producer_id, LINDEN) and producer.publish(producer_id, LINDEN)
    assert _answer(consumer) == ("#RETURN", 2)
    assert _answer(consumer) == ("#RETURN", [LINDEN, LINDEN])
    kind, books = _answer(consumer)
    assert kind == "#RETURN" and books.ordered == 2 and books.balanced


def test_a_request_split_into_pieces_and_a_large_one_are_read_whole(served):
    serving, authkey = served
    conn = _attach(served)
    sock = socket.socket(fileno=conn.fileno())
    try:
        producer = managers.dispatch(conn, MARKET_IDENT, "register_producer")
        big = Product("x" * 3_000_000, 1)  # several reads of the server
        frame = _frame((MARKET_IDENT, "publish", (producer, big), {}))
        for at in range(0, 63, 3):  # the length header arrives in bits too
            sock.sendall(frame[at : at + 3])
            time.sleep(0.005)
        sock.sendall(frame[63:])
        assert _answer(conn) == ("#RETURN", True)
    finally:
        sock.detach()
    market = connect(serving.address, authkey)
    cart = market.new_cart()
    assert market.add_many(cart, big, 1) == 1
    assert market.place_order(cart) == [big]  # a large answer too


def test_a_client_that_does_not_read_its_answer_holds_up_nobody(served):
    serving, authkey = served
    market = connect(serving.address, authkey)
    producer = market.register_producer()
    cart = market.new_cart()
    for index in range(3):
        assert market.publish(producer, Product(f"{index:x}" * 2_000_000, 1))
    slow = _attach(served)
    slow.send((MARKET_IDENT, "snapshot", (), {}))  # more than the socket's buffers take
    deadline = time.monotonic() + CALL_S
    while not any(client.outbox for client in serving._server.loop._clients):
        assert time.monotonic() < deadline, "the answer never outgrew the socket"
        time.sleep(0.01)
    other = connect(serving.address, authkey)  # meanwhile the market serves others
    for _ in range(50):
        assert other.add_many(cart, LINDEN, 1) == 0
    kind, snapshot = _answer(slow)
    assert kind == "#RETURN" and snapshot.units_on_sale == 3


def test_a_client_that_sends_without_reading_is_read_no_more_until_it_catches_up(
    served, monkeypatch
):
    serving, authkey = served
    monkeypatch.setattr(dispatch, "OUTBOX_HIGH", 64 * 1024)
    flood = _attach(served)
    sock = socket.socket(fileno=os.dup(flood.fileno()))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    sock.setblocking(False)
    requests = 500_000  # about 20 MB: more than the socket buffers both ways hold
    stream = memoryview(_frame((MARKET_IDENT, "audit", (), {})) * requests)
    sent, last_sent = 0, time.monotonic()
    while sent < len(stream) and time.monotonic() - last_sent < 0.5:
        try:
            sent += sock.send(stream[sent : sent + (1 << 20)])
            last_sent = time.monotonic()
        except BlockingIOError:
            time.sleep(0.01)
    assert sent < len(stream), "the server read every request without any answer read"
    (client,) = [c for c in serving._server.loop._clients if c.paused]
    assert len(client.outbox) <= dispatch.OUTBOX_HIGH + 2 * dispatch._RECV_BYTES
    other = connect(serving.address, authkey)
    assert other.audit() == []  # the others are served meanwhile
    other.disconnect()
    sock.setblocking(True)
    sock.settimeout(CALL_S)
    rest = threading.Thread(target=sock.sendall, args=(stream[sent:],))
    rest.start()
    answer = pickle.dumps(("#RETURN", []), pickle.HIGHEST_PROTOCOL)
    expected = (struct.pack("!i", len(answer)) + answer) * requests
    received = bytearray()
    while len(received) < len(expected):  # reading resumes it: every request is answered
        received += sock.recv(1 << 20)
    rest.join(CALL_S)
    assert received == expected
    sock.setblocking(True)
    assert not client.paused
    assert managers.dispatch(flood, MARKET_IDENT, "audit") == []
    sock.close()


def test_requests_piled_behind_a_waiting_call_are_read_no_more_until_it_ends(served, monkeypatch):
    serving, authkey = served
    monkeypatch.setattr(dispatch, "BACKLOG_HIGH", 100)
    market = connect(serving.address, authkey)
    producer = market.register_producer()
    consumer = _attach(served)
    cart = managers.dispatch(consumer, MARKET_IDENT, "new_cart")
    audit = _frame((MARKET_IDENT, "audit", (), {}))
    sock = socket.socket(fileno=os.dup(consumer.fileno()))
    sock.sendall(_frame((MARKET_IDENT, "add_many", (cart, LINDEN, 1, 30.0), {})) + audit * 1000)
    deadline = time.monotonic() + CALL_S
    while not any(c.paused for c in serving._server.loop._clients):
        assert time.monotonic() < deadline, "never paused"
        time.sleep(0.01)
    (client,) = [c for c in serving._server.loop._clients if c.paused]
    piled = len(client.backlog)
    sock.sendall(audit * 1000)  # now left in the socket
    time.sleep(0.2)
    assert len(client.backlog) == piled and client.events == 0
    assert market.publish(producer, LINDEN)  # the add ends: the backlog goes, reading resumes
    assert _answer(consumer) == ("#RETURN", 1)
    for _ in range(2000):
        assert _answer(consumer) == ("#RETURN", [])
    assert not client.paused and not client.backlog
    sock.close()
    market.disconnect()


def test_unknown_objects_methods_and_garbage_are_refused_and_the_connection_lives_on(served):
    conn = _attach(served)
    with pytest.raises(managers.RemoteError, match="KeyError"):
        managers.dispatch(conn, "no-such-object", "books")
    with pytest.raises(managers.RemoteError, match="not exposed"):
        managers.dispatch(conn, MARKET_IDENT, "_take_from_sale")
    sock = socket.socket(fileno=conn.fileno())
    try:
        sock.sendall(struct.pack("!i", 5) + b"junk!")
    finally:
        sock.detach()
    kind, text = _answer(conn)
    assert kind == "#TRACEBACK" and "UnpicklingError" in text
    assert managers.dispatch(conn, MARKET_IDENT, "new_cart") == 0


def test_a_client_gone_while_waiting_leaves_no_waiter_behind(served):
    serving, authkey = served
    conn = _attach(served)
    cart = managers.dispatch(conn, MARKET_IDENT, "new_cart")
    conn.send((MARKET_IDENT, "add_many", (cart, LINDEN, 3, 30.0), {}))
    deadline = time.monotonic() + CALL_S
    while not serving.market.waits().consumers:
        assert time.monotonic() < deadline, "the add never waited"
        time.sleep(0.01)
    conn.close()
    while serving.market.waits().consumers:
        assert time.monotonic() < deadline, "the waiter of a closed connection stayed"
        time.sleep(0.01)
    market = connect(serving.address, authkey)
    producer = market.register_producer()
    assert market.publish(producer, LINDEN)
    assert market.books().on_sale == 1  # on sale, not in the gone client's cart


def test_waits_end_at_their_timeout_in_the_order_of_their_deadlines(served):
    serving, authkey = served
    waits = [(0.6, "late"), (0.2, "early"), (0.4, "middle")]
    ended: list[str] = []
    attached = threading.Barrier(len(waits), timeout=CALL_S)  # connecting is not timed

    def wait(timeout: float, name: str) -> None:
        market = connect(serving.address, authkey)
        cart = market.new_cart()
        attached.wait()
        assert market.add_many(cart, LINDEN, 1, timeout) == 0
        ended.append(name)

    threads = [threading.Thread(target=wait, args=spec) for spec in waits]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(CALL_S)
    assert ended == ["early", "middle", "late"]


def test_waits_are_ended_by_other_threads_of_the_server(served):
    """A lease or a stop acts on the market outside the serving thread."""
    serving, authkey = served
    market = connect(serving.address, authkey)
    producer = market.register_producer()
    cart = market.new_cart()
    assert market.publish(producer, LINDEN)
    errors: list[Exception] = []

    def wait_for(proxy_cart: int) -> None:
        try:
            connect(serving.address, authkey).add_many(proxy_cart, LINDEN, 2, 30.0)
        except Exception as error:
            errors.append(error)

    first = threading.Thread(target=wait_for, args=(cart,))
    first.start()
    deadline = time.monotonic() + CALL_S
    while not serving.market.waits().consumers:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert serving.market.release_cart(cart) == 1  # from this thread, as the lease does
    first.join(CALL_S)
    second = threading.Thread(target=wait_for, args=(market.new_cart(),))
    second.start()
    while not serving.market.waits().consumers:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    serving.market.close()
    second.join(CALL_S)
    assert [type(error) for error in errors] == [CartRevokedError, MarketClosedError]


def test_a_silent_connection_is_dropped_and_never_blocks_an_attach(served, monkeypatch):
    serving, authkey = served
    monkeypatch.setattr(server_module, "HANDSHAKE_TIMEOUT", 0.5)
    silent = socket.create_connection(serving.address, timeout=CALL_S)
    try:
        market = connect(serving.address, authkey)  # attaches while the other says nothing
        assert market.new_cart() == 0
        silent.settimeout(CALL_S)
        challenge = silent.recv(1024)  # the server speaks first ...
        assert challenge
        assert silent.recv(1024) == b""  # ... and hangs up on silence
    finally:
        silent.close()
