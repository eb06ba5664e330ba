"""The market's fault handling: released carts, leases, audits, who waits."""

from __future__ import annotations

import contextlib
import threading
import time

import pytest

from mpmarket.core.market import Marketplace
from mpmarket.errors import CartRevokedError, MarketClosedError, UnknownCartError
from mpmarket.products import Coffee, Tea

LINDEN = Tea("Linden", 9, "Herbal")
ARABICA = Coffee("Arabica", 3, 5.02, "LIGHT")


def _market_with_a_full_cart(units: int = 3) -> tuple[Marketplace, int, int]:
    market = Marketplace(units)
    producer = market.register_producer()
    cart = market.new_cart()
    for _ in range(units):
        assert market.publish(producer, LINDEN)
    assert market.add_many(cart, LINDEN, units) == units
    return market, producer, cart


def test_a_released_cart_puts_every_unit_back_on_sale_and_is_revoked():
    market, _producer, cart = _market_with_a_full_cart(3)
    assert market.books().on_sale_per_producer == (0,)
    assert market.release_cart(cart) == 3
    books = market.books()
    assert (books.on_sale, books.in_carts, books.on_sale_per_producer) == (3, 0, (3,))
    assert books.balanced and market.audit() == []
    for call in (
        lambda: market.place_order(cart),
        lambda: market.add_many(cart, LINDEN, 1),
        lambda: market.remove_many(cart, LINDEN, 1),
    ):
        with pytest.raises(CartRevokedError):
            call()
    assert market.release_cart(cart) == 0  # twice is harmless
    other = market.new_cart()
    assert market.add_many(other, LINDEN, 3) == 3  # the units are sold again, once


def test_releasing_an_unknown_cart_is_refused():
    with pytest.raises(UnknownCartError):
        Marketplace(1).release_cart(0)


def test_a_waiting_owner_is_woken_with_revoked_and_its_partial_units_go_back():
    market = Marketplace(5)
    producer = market.register_producer()
    cart = market.new_cart()
    errors: list[Exception] = []

    def wait_for_three() -> None:
        try:
            market.add_many(cart, LINDEN, 3, 30.0)
        except CartRevokedError as error:
            errors.append(error)

    waiter = threading.Thread(target=wait_for_three)
    waiter.start()
    try:
        deadline = time.monotonic() + 10
        while market.books().waiting_consumers == 0 and time.monotonic() < deadline:
            time.sleep(0.001)
        assert market.publish(producer, LINDEN)  # handed into the waiting cart
        assert market.books().in_carts == 1
        assert market.release_cart(cart) == 1
    finally:
        waiter.join(timeout=10)
    assert not waiter.is_alive()
    assert len(errors) == 1 and errors[0].cart_id == cart
    books = market.books()
    assert (books.on_sale, books.in_carts, books.waiting_consumers) == (1, 0, 0)
    assert market.audit() == []


def test_the_lease_expires_idle_carts_that_hold_units_only():
    market, _, full = _market_with_a_full_cart(2)
    empty = market.new_cart()
    assert market.expire_idle_carts(60.0) == []  # not idle long enough
    time.sleep(0.02)
    assert market.expire_idle_carts(0.01) == [full]
    assert market.books().on_sale == 2
    assert market.place_order(empty) == []  # the empty cart lives on
    with pytest.raises(CartRevokedError):
        market.place_order(full)


def test_a_cart_waiting_in_the_market_is_not_idle():
    market = Marketplace(2)
    producer = market.register_producer()
    cart = market.new_cart()
    market.publish(producer, ARABICA)
    market.add_many(cart, ARABICA, 1)
    done = threading.Event()
    waiter = threading.Thread(target=lambda: (market.add_many(cart, LINDEN, 1, 30.0), done.set()))
    waiter.start()
    try:
        deadline = time.monotonic() + 10
        while market.books().waiting_consumers == 0 and time.monotonic() < deadline:
            time.sleep(0.001)
        time.sleep(0.02)
        assert market.expire_idle_carts(0.01) == []
        market.publish(producer, LINDEN)
    finally:
        waiter.join(timeout=10)
    assert done.is_set()


def test_the_audit_finds_corrupt_books():
    market, producer, _cart = _market_with_a_full_cart(2)
    assert market.audit() == []
    market._on_sale_per_producer[producer] += 1  # corrupt on purpose
    market._ordered += 1
    problems = market.audit()
    assert any("producer 0 counts 1 on sale, holds 0" in p for p in problems)
    assert any(p.startswith("published 2 != on sale 0 + in carts 2 + ordered 1") for p in problems)


def test_waits_names_waiting_consumers_blocked_producers_and_slots():
    market = Marketplace(2)
    producer = market.register_producer()
    cart = market.new_cart()
    market.publish(producer, ARABICA)
    market.publish(producer, ARABICA)

    def until_closed(call) -> None:
        with contextlib.suppress(MarketClosedError):
            call()

    threads = [
        threading.Thread(
            target=until_closed, args=(lambda: market.add_many(cart, LINDEN, 2, 30.0),)
        ),
        threading.Thread(
            target=until_closed, args=(lambda: market.publish(producer, LINDEN, 30.0),)
        ),
    ]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            books = market.books()
            if books.waiting_consumers and books.waiting_producers:
                break
            time.sleep(0.001)
        waits = market.waits()
        assert waits.consumers == ((cart, LINDEN, 2),)
        assert waits.producers == ((producer, LINDEN),)
        assert waits.slots == {producer: ((ARABICA, 2),)}
        assert waits.queue_size_per_producer == 2
    finally:
        market.close()
        for thread in threads:
            thread.join(timeout=10)


def test_books_count_what_each_producer_sold():
    market = Marketplace(5)
    first, second = market.register_producer(), market.register_producer()
    cart = market.new_cart()
    for producer, product in ((first, LINDEN), (second, LINDEN), (second, ARABICA)):
        assert market.publish(producer, product)
    assert market.add_many(cart, LINDEN, 2) == 2
    assert market.add_many(cart, ARABICA, 1) == 1
    assert market.remove_many(cart, LINDEN, 1) == 1  # the last taken: second's
    market.place_order(cart)
    assert market.books().sold_per_producer == (1, 1)
