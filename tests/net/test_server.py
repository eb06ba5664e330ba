"""The market server through real processes and real loopback sockets."""

from __future__ import annotations

import multiprocessing
import socket
import threading
import time

import pytest

from mpmarket.errors import (
    MarketClosedError,
    MarketUnavailableError,
    UnknownCartError,
    UnknownProducerError,
)
from mpmarket.net.client import connect
from mpmarket.net.server import new_authkey, start_server
from mpmarket.net.wire import format_address, parse_address
from mpmarket.products import Coffee, Tea

LINDEN = Tea("Linden", 9, "Herbal")
ARABICA = Coffee("Arabica", 3, 5.02, "LIGHT")


@pytest.fixture
def server():
    authkey = new_authkey()
    manager = start_server(2, authkey=authkey, ctx=multiprocessing.get_context("fork"))
    try:
        yield manager.address, authkey
    finally:
        manager.shutdown()


def test_operations_through_a_proxy(server):
    market = connect(*server)
    producer = market.register_producer()
    cart = market.new_cart()
    assert (producer, cart) == (0, 0)
    assert market.publish(producer, LINDEN)
    assert market.publish(producer, ARABICA)
    assert not market.publish(producer, LINDEN)  # the cap is 2
    assert market.add_to_cart(cart, LINDEN)
    assert market.publish(producer, LINDEN)  # the add freed a slot
    assert market.add_many(cart, LINDEN, 3, 0.0) == 1
    assert market.remove_from_cart(cart, LINDEN)
    assert market.place_order(cart) == [LINDEN]
    books = market.books()
    assert books.balanced and books.published == 3 and books.ordered == 1


def test_named_exceptions_keep_their_type_through_the_proxy(server):
    market = connect(*server)
    with pytest.raises(UnknownProducerError) as raised:
        market.publish(42, LINDEN)
    assert raised.value.producer_id == 42
    with pytest.raises(UnknownCartError):
        market.place_order(7)


def test_blocked_add_is_woken_by_a_publish_from_another_process(server):
    consumer = connect(*server)
    producer = connect(*server)
    producer_id = producer.register_producer()
    cart = consumer.new_cart()
    got = []
    waiter = threading.Thread(target=lambda: got.append(consumer.add_many(cart, LINDEN, 2, 30.0)))
    waiter.start()
    assert producer.publish(producer_id, LINDEN)
    assert producer.publish(producer_id, LINDEN)
    waiter.join(timeout=20)
    assert got == [2]


def test_close_wakes_blocked_callers_with_market_closed(server):
    market = connect(*server)
    cart = market.new_cart()
    errors = []

    def wait_for_tea() -> None:
        try:
            market.add_many(cart, LINDEN, 1, 30.0)
        except MarketClosedError as error:
            errors.append(error)

    waiter = threading.Thread(target=wait_for_tea)
    waiter.start()
    watcher = connect(*server)
    deadline = time.monotonic() + 20
    while watcher.books().waiting_consumers == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    watcher.close()
    waiter.join(timeout=20)
    assert len(errors) == 1


def test_wrong_authkey_is_refused_and_the_server_keeps_serving(server):
    address, authkey = server
    with pytest.raises(
        MarketUnavailableError, match=r"^authentication failed for 127\.0\.0\.1:\d+$"
    ):
        connect(address, b"not the key")
    assert connect(address, authkey).new_cart() == 0


def test_unreachable_server_is_one_clear_error():
    authkey = new_authkey()
    manager = start_server(1, authkey=authkey, ctx=multiprocessing.get_context("fork"))
    address = manager.address
    manager.shutdown()
    with pytest.raises(
        MarketUnavailableError, match=r"^cannot reach market at .*connection refused"
    ):
        connect(address, authkey, timeout=0.2)


def test_authkey_is_not_in_reprs(server):
    address, authkey = server
    market = connect(address, authkey)
    assert authkey.hex() not in repr(market) and repr(authkey) not in repr(market)


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("127.0.0.1:5000", ("127.0.0.1", 5000)),
        ("[::1]:80", ("::1", 80)),
        ("localhost:0", ("localhost", 0)),
    ],
)
def test_address_parsing_round_trips(text, address):
    assert parse_address(text) == address
    assert parse_address(format_address(address)) == address


@pytest.mark.parametrize("text", ["", "5000", "host:", "host:port", "host:70000"])
def test_bad_addresses_are_refused(text):
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_address(text)


def _attach_and_register(address, authkey, results) -> None:
    market = connect(address, authkey, timeout=60)
    results.put(market.register_producer())


@pytest.mark.timeout(90)
def test_a_storm_of_256_agents_attaches(server):
    """256 processes connect at once: the stock backlog of 16 left some hanging."""
    address, authkey = server
    ctx = multiprocessing.get_context("fork")
    results = ctx.SimpleQueue()
    processes = [
        ctx.Process(target=_attach_and_register, args=(address, authkey, results))
        for _ in range(256)
    ]
    try:
        for process in processes:
            process.start()
        for process in processes:
            process.join(timeout=60)
        assert [p.exitcode for p in processes] == [0] * 256
        ids = sorted(results.get() for _ in range(256))
        assert ids == list(range(256))
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join(5)


def test_the_managers_own_requests_do_not_wait_on_delayed_acks():
    """The stock client has no TCP_NODELAY: its shutdown request waited 40 ms."""
    authkey = new_authkey()
    manager = start_server(2, authkey=authkey, ctx=multiprocessing.get_context("fork"))
    try:
        conn = manager._Client(manager.address, authkey=authkey)  # what shutdown() uses
        try:
            sock = socket.socket(fileno=conn.fileno())
            try:
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
            finally:
                sock.detach()
        finally:
            conn.close()
    finally:
        manager.shutdown()
    assert manager._process.exitcode == 0
