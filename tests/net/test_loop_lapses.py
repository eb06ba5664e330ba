"""The serving loop lets a lapsed add's place go after the grace (core/market.py).

A consumer whose try ended keeps its place, and a unit published meanwhile is
kept for its retry; when no retry comes, the unit must reach the next waiter
after ``LAPSE_GRACE_S`` with no other event: the serving loop does it.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from typing import Any

import pytest

from mpmarket.net.client import connect
from mpmarket.net.server import new_authkey, start_server
from mpmarket.products import Tea

LINDEN = Tea("Linden", 9, "Herbal")
BOUND_S = 10.0  # a hang fails within it; nothing is timed


@pytest.fixture
def served_line() -> Iterator[tuple[Any, Any, Any]]:
    """A real market server on loopback, and three proxies to it."""
    authkey = new_authkey()
    manager = start_server(3, authkey=authkey, ctx=multiprocessing.get_context("fork"))
    try:
        yield tuple(connect(manager.address, authkey) for _ in range(3))
    finally:
        manager.shutdown()


def test_a_kept_unit_reaches_the_next_waiter_through_the_serving_loop(served_line) -> None:
    """The same through a real server: its serving loop lets the place go, nobody else."""
    consumer_a, consumer_b, producer_proxy = served_line
    producer = producer_proxy.register_producer()
    cart_a, cart_b = consumer_a.new_cart(), consumer_b.new_cart()
    assert consumer_a.add_many(cart_a, LINDEN, 1, 0.01) == 0  # A's try ends; A never retries
    assert producer_proxy.publish(producer, LINDEN)  # kept for A
    assert consumer_b.add_many(cart_b, LINDEN, 1, BOUND_S) == 1  # B gets it after the grace
    books = producer_proxy.books()
    assert (books.on_sale, books.in_carts, books.balanced) == (0, 1, True)
