"""Timed waits of the serving loop: the right answers, every client served meanwhile.

How soon a timed-out wait returns is measured by ``mpmarket bench latency``
(cases "timed-out wait, N ms"), never asserted here: machines are noisy. What
is asserted is that short and sub-millisecond timeouts end with the answer of
a timed-out call and leave nothing parked, that other clients are served while
many such waits come and go, and that the precise wait of ``mpmarket.net.timing``
returns what the selector would.
"""

from __future__ import annotations

import selectors
import socket
import sys
import threading
import time

import pytest

from mpmarket.core.market import Marketplace
from mpmarket.net.client import connect
from mpmarket.net.timing import TIMER_SLACK_NS, PreciseSelect, precise_timers
from mpmarket.products import Tea
from tests.net.conftest import serving_market

LINDEN = Tea("Linden", 9, "Herbal")
MINT = Tea("Mint", 4, "Herbal")
NEVER = Tea("Never", 1, "Published")
CALL_S = 10.0  # a generous bound on any single answer in these tests
TIMEOUTS = (0.0001, 0.0005, 0.001, 0.0015, 0.005)


@pytest.fixture
def served():
    """A queue of one (the conftest's has three): the tests fill it with one publish."""
    with serving_market(1) as served:
        yield served


def _no_waiters(market: Marketplace) -> bool:
    waits = market.waits()
    return not waits.consumers and not waits.producers


@pytest.mark.parametrize("timeout", TIMEOUTS)
def test_timed_out_calls_answer_as_timed_out_and_leave_nothing_parked(served, timeout):
    serving, authkey = served
    market = connect(serving.address, authkey)
    cart = market.new_cart()
    producer = market.register_producer()
    assert market.add_to_cart(cart, NEVER, timeout=timeout) is False
    assert market.add_many(cart, NEVER, 3, timeout) == 0
    assert market.publish(producer, LINDEN)  # its one slot (queue size 1)
    assert market.publish(producer, MINT, timeout) is False  # full: times out
    assert market.add_many(cart, LINDEN, 2, timeout) == 1  # the one on sale, then timed out
    assert market.remove_from_cart(cart, LINDEN)
    books = market.books()
    assert (books.published, books.on_sale) == (1, 1)
    assert _no_waiters(serving.market)
    assert market.add_to_cart(cart, LINDEN, timeout=timeout) is True  # still served at once


def test_clients_are_served_while_many_short_waits_time_out(served):
    """Four clients time out 1 ms and sub-ms waits in a loop; the others see no difference."""
    serving, authkey = served
    stop = threading.Event()
    outcomes: list[object] = []
    errors: list[BaseException] = []

    def time_out(timeout: float) -> None:
        try:
            market = connect(serving.address, authkey)
            cart = market.new_cart()
            while not stop.is_set():
                outcomes.append(market.add_to_cart(cart, NEVER, timeout=timeout))
        except BaseException as error:  # reported below
            errors.append(error)

    waiters = [threading.Thread(target=time_out, args=(t,)) for t in (0.001, 0.0003, 0.001, 0.002)]
    for thread in waiters:
        thread.start()
    try:
        market = connect(serving.address, authkey)
        producer = market.register_producer()
        consumer = connect(serving.address, authkey)
        cart = consumer.new_cart()
        got: list[int] = []
        waiting = threading.Thread(
            target=lambda: got.append(consumer.add_many(cart, MINT, 1, CALL_S))
        )
        waiting.start()
        deadline = time.monotonic() + CALL_S
        while not serving.market.waits().consumers or len(outcomes) < 20:
            assert time.monotonic() < deadline, "no wait parked"
            time.sleep(0.01)
        for _ in range(200):  # plain calls, answered between the waits' deadlines
            assert market.publish(producer, LINDEN)
            own = market.new_cart()
            assert market.add_to_cart(own, LINDEN)
            assert market.place_order(own) == [LINDEN]
        assert market.publish(producer, MINT)  # handed to the consumer waiting 10 s
        waiting.join(CALL_S)
        assert got == [1]
    finally:
        stop.set()
        for thread in waiters:
            thread.join(CALL_S)
    assert not errors
    assert outcomes and all(outcome is False for outcome in outcomes)
    assert _no_waiters(serving.market)
    assert consumer.place_order(cart) == [MINT]


def _pair() -> tuple[socket.socket, socket.socket]:
    left, right = socket.socketpair()
    left.setblocking(False)
    return left, right


@pytest.mark.parametrize("kind", ["default", "select"])
def test_the_precise_wait_returns_what_the_selector_would(kind):
    selector = selectors.DefaultSelector() if kind == "default" else selectors.SelectSelector()
    left, right = _pair()
    try:
        selector.register(left, selectors.EVENT_READ, "left")
        wait = PreciseSelect(selector)
        assert wait(0.0005) == []  # nothing ready: its time passes, no events
        assert wait(0.0) == []
        right.send(b"x")
        for timeout in (None, 0.0, 0.0005, 5.0):  # ready: returned at once, every time
            assert [(key.data, mask) for key, mask in wait(timeout)] == [
                ("left", selectors.EVENT_READ)
            ]
        left.recv(1)
        threading.Timer(0.05, right.send, (b"y",)).start()
        assert [key.data for key, _ in wait(CALL_S)] == ["left"]  # woken mid-wait
    finally:
        selector.close()
        left.close()
        right.close()


def test_the_precise_wait_falls_back_to_the_selector_past_fd_setsize():
    selector = selectors.DefaultSelector()
    left, right = _pair()
    try:
        selector.register(left, selectors.EVENT_READ, "left")
        wait = PreciseSelect(selector)
        wait._fd = 1 << 20  # where select() cannot look: ValueError, then epoll's own wait
        assert wait(0.001) == []
        assert wait._fd is None
        right.send(b"x")
        assert [key.data for key, _ in wait(0.001)] == ["left"]
    finally:
        selector.close()
        left.close()
        right.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")
def test_precise_timers_lower_the_timer_slack_of_the_calling_thread_alone():
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pr_get_timerslack = 30
    before = libc.prctl(pr_get_timerslack, 0, 0, 0, 0)
    seen: list[tuple[bool, int]] = []

    def lower() -> None:
        seen.append((precise_timers(), libc.prctl(pr_get_timerslack, 0, 0, 0, 0)))

    thread = threading.Thread(target=lower)
    thread.start()
    thread.join(CALL_S)
    assert seen == [(True, TIMER_SLACK_NS)]
    assert libc.prctl(pr_get_timerslack, 0, 0, 0, 0) == before  # this thread's is its own
