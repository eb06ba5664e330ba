"""The Marketplace alone, in one process: every operation and its edge cases.

Blocking calls run in helper threads; every wait is bounded, and the only
timing claim made is "it returned before its timeout".
"""

from __future__ import annotations

import logging
import math
import pickle
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mpmarket.core.books import MarketBooks
from mpmarket.core.market import Marketplace
from mpmarket.errors import (
    InvalidArgumentError,
    MarketClosedError,
    MarketError,
    MarketUnavailableError,
    MpmarketError,
    RunError,
    UnknownCartError,
    UnknownProducerError,
    WorkloadError,
)
from mpmarket.net.oplog import operation_logger
from mpmarket.products import Coffee, Product, Tea

LINDEN = Tea("Linden", 9, "Herbal")
GREEN = Tea("Sencha", 7, "Green")
INDONEZIA = Coffee("Indonezia", 1, 5.05, "MEDIUM")
PLAIN_LINDEN = Product("Linden", 9)  # same name and price as LINDEN, another class

# How long a test waits for a helper thread or a state it expects; a blocked
# call under test is given a far longer timeout, so "returned before its
# timeout" means it was woken, not that it gave up.
WAIT_S = 5.0
LONG_TIMEOUT_S = 60.0


# -- helpers ------------------------------------------------------------------


class Call:
    """Run ``fn(*args)`` in a daemon thread and keep its result or exception."""

    def __init__(self, fn: Callable[..., Any], *args: Any) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self.finished_at: float | None = None
        self.started_at = time.monotonic()
        self._thread = threading.Thread(target=self._run, args=(fn, args), daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        try:
            self.result = fn(*args)
        except BaseException as error:
            self.error = error
        finally:
            self.finished_at = time.monotonic()

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def join(self) -> Call:
        self._thread.join(timeout=WAIT_S)
        assert not self._thread.is_alive(), "the call did not return"
        return self

    def value(self) -> Any:
        self.join()
        if self.error is not None:
            raise self.error
        return self.result

    @property
    def elapsed(self) -> float:
        assert self.finished_at is not None
        return self.finished_at - self.started_at


def wait_until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.001)


def wait_for_waiters(market: Marketplace, *, consumers: int = 0, producers: int = 0) -> None:
    def there() -> bool:
        books = market.books()
        return books.waiting_consumers == consumers and books.waiting_producers == producers

    wait_until(there, f"{consumers} consumers and {producers} producers wait")


def balanced(market: Marketplace) -> MarketBooks:
    books = market.books()
    assert books.balanced, books
    return books


@pytest.fixture
def market() -> Marketplace:
    return Marketplace(2)


# -- construction and books ---------------------------------------------------


@pytest.mark.parametrize("size", [0, -1, True, 1.5, "2", None])
def test_queue_size_must_be_a_positive_int(size):
    with pytest.raises(InvalidArgumentError):
        Marketplace(size)


def test_fresh_market_books():
    books = Marketplace(3).books()
    assert books == MarketBooks(
        queue_size_per_producer=3,
        producers=0,
        carts=0,
        published=0,
        on_sale=0,
        in_carts=0,
        ordered=0,
        orders=0,
        on_sale_per_producer=(),
        sold_per_producer=(),
        waiting_consumers=0,
        waiting_producers=0,
        closed=False,
    )
    assert books.balanced


def test_books_are_a_frozen_snapshot(market):
    producer = market.register_producer()
    before = market.books()
    market.publish(producer, LINDEN)
    assert before.published == 0
    assert market.books().published == 1
    with pytest.raises(AttributeError):
        before.published = 5  # type: ignore[misc]


# -- ids ------------------------------------------------------------------------


def test_producer_ids_are_0_1_2(market):
    assert [market.register_producer() for _ in range(3)] == [0, 1, 2]
    books = balanced(market)
    assert books.producers == 3
    assert books.on_sale_per_producer == (0, 0, 0)


def test_cart_ids_are_0_1_2_independent_of_producers(market):
    market.register_producer()
    market.register_producer()
    assert [market.new_cart() for _ in range(3)] == [0, 1, 2]
    assert market.register_producer() == 2
    assert balanced(market).carts == 3


# -- publish ------------------------------------------------------------------


def test_publish_is_refused_at_the_cap(market):
    producer = market.register_producer()
    assert market.publish(producer, LINDEN) is True
    assert market.publish(producer, INDONEZIA) is True
    before = balanced(market)
    assert market.publish(producer, LINDEN) is False
    assert market.publish(producer, GREEN, 0) is False
    assert market.books() == before
    assert before.published == before.on_sale == 2
    assert before.on_sale_per_producer == (2,)


def test_the_cap_is_per_producer(market):
    first, second = market.register_producer(), market.register_producer()
    assert market.publish(first, LINDEN)
    assert market.publish(first, LINDEN)
    assert not market.publish(first, LINDEN)
    assert market.publish(second, LINDEN)
    assert balanced(market).on_sale_per_producer == (2, 1)


def test_publish_is_accepted_again_after_an_add_frees_a_slot(market):
    producer, cart = market.register_producer(), market.new_cart()
    assert market.publish(producer, LINDEN)
    assert market.publish(producer, LINDEN)
    assert not market.publish(producer, GREEN)
    assert market.add_to_cart(cart, LINDEN)
    assert balanced(market).on_sale_per_producer == (1,)
    assert market.publish(producer, GREEN)
    assert not market.publish(producer, GREEN)
    books = balanced(market)
    assert books.published == 3
    assert books.on_sale == 2
    assert books.in_carts == 1


def test_placing_an_order_frees_no_slot(market):
    producer, cart = market.register_producer(), market.new_cart()
    market.publish(producer, LINDEN)
    market.publish(producer, LINDEN)
    market.add_to_cart(cart, LINDEN)
    assert market.publish(producer, LINDEN)
    assert market.place_order(cart) == [LINDEN]
    assert not market.publish(producer, LINDEN)
    assert balanced(market).on_sale_per_producer == (2,)


# -- add ------------------------------------------------------------------------


def test_add_is_false_when_nothing_matches(market):
    producer, cart = market.register_producer(), market.new_cart()
    assert not market.add_to_cart(cart, LINDEN)
    market.publish(producer, LINDEN)
    before = balanced(market)
    assert not market.add_to_cart(cart, PLAIN_LINDEN)  # same name and price, not a Tea
    assert not market.add_to_cart(cart, Tea("Linden", 9, "Black"))
    assert not market.add_to_cart(cart, GREEN)
    assert market.books() == before


def test_add_matches_by_value(market):
    producer, cart = market.register_producer(), market.new_cart()
    market.publish(producer, Tea("Linden", 9, "Herbal"))
    assert market.add_to_cart(cart, Tea("Linden", 9, "Herbal"))
    assert market.place_order(cart) == [LINDEN]


def test_add_takes_the_first_unit_on_sale_in_fifo_order():
    market = Marketplace(1)
    p0, p1, p2 = (market.register_producer() for _ in range(3))
    cart = market.new_cart()
    # Published in the order p1, p0, p2: the adds must free p1, then p0, then p2.
    assert market.publish(p1, LINDEN)
    assert market.publish(p0, LINDEN)
    assert market.publish(p2, LINDEN)
    assert balanced(market).on_sale_per_producer == (1, 1, 1)
    assert market.add_to_cart(cart, LINDEN)
    assert balanced(market).on_sale_per_producer == (1, 0, 1)
    assert not market.publish(p0, GREEN)
    assert market.publish(p1, GREEN)  # p1's slot, and only p1's, was freed
    assert market.add_to_cart(cart, LINDEN)
    assert balanced(market).on_sale_per_producer == (0, 1, 1)
    assert market.add_to_cart(cart, LINDEN)
    assert balanced(market).on_sale_per_producer == (0, 1, 0)
    assert not market.add_to_cart(cart, LINDEN)


def test_fifo_is_per_kind(market):
    p0, p1 = market.register_producer(), market.register_producer()
    cart = market.new_cart()
    market.publish(p0, GREEN)  # first on sale overall, but another kind
    market.publish(p1, LINDEN)
    market.publish(p0, LINDEN)
    assert market.add_to_cart(cart, LINDEN)
    assert balanced(market).on_sale_per_producer == (2, 0)
    assert market.add_to_cart(cart, GREEN)
    assert balanced(market).on_sale_per_producer == (1, 0)


def test_add_many_takes_what_there_is_oldest_first():
    market = Marketplace(5)
    p0, p1 = market.register_producer(), market.register_producer()
    cart = market.new_cart()
    market.publish(p1, LINDEN)
    market.publish(p0, LINDEN)
    market.publish(p1, LINDEN)
    market.publish(p0, LINDEN)
    assert market.add_many(cart, LINDEN, 3) == 3
    assert balanced(market).on_sale_per_producer == (1, 0)
    assert market.add_many(cart, LINDEN, 5) == 1
    assert market.add_many(cart, LINDEN, 5) == 0
    assert market.add_many(cart, LINDEN, 0) == 0
    books = balanced(market)
    assert books.on_sale_per_producer == (0, 0)
    assert books.in_carts == 4
    assert market.place_order(cart) == [LINDEN] * 4


def test_add_many_zero_takes_nothing(market):
    producer, cart = market.register_producer(), market.new_cart()
    market.publish(producer, LINDEN)
    before = market.books()
    assert market.add_many(cart, LINDEN, 0) == 0
    assert market.add_many(cart, LINDEN, 0, 1.0) == 0
    assert market.books() == before


# -- remove ---------------------------------------------------------------------


def test_remove_puts_the_unit_back_at_the_end_of_the_queue():
    market = Marketplace(1)
    p0, p1 = market.register_producer(), market.register_producer()
    mine, other = market.new_cart(), market.new_cart()
    market.publish(p0, LINDEN)
    market.publish(p1, LINDEN)
    assert market.add_to_cart(mine, LINDEN)  # p0's unit
    assert balanced(market).on_sale_per_producer == (0, 1)
    assert market.remove_from_cart(mine, LINDEN)  # back on sale, behind p1's
    assert balanced(market).on_sale_per_producer == (1, 1)
    assert market.add_to_cart(other, LINDEN)
    assert balanced(market).on_sale_per_producer == (1, 0)  # p1's went first
    assert market.add_to_cart(other, LINDEN)
    assert balanced(market).on_sale_per_producer == (0, 0)


def test_remove_goes_back_into_the_producer_count_even_above_the_cap():
    market = Marketplace(1)
    producer, cart = market.register_producer(), market.new_cart()
    assert market.publish(producer, LINDEN)
    assert market.add_to_cart(cart, LINDEN)
    assert market.publish(producer, LINDEN)
    assert market.publish(producer, GREEN) is False
    assert market.add_to_cart(cart, LINDEN)
    assert market.publish(producer, GREEN)
    # Two units in the cart, one on sale, cap 1: both still go back.
    assert market.remove_many(cart, LINDEN, 2) == 2
    books = balanced(market)
    assert books.on_sale_per_producer == (3,)
    assert books.on_sale == 3
    assert books.in_carts == 0
    assert books.waiting_producers == 0
    assert not market.publish(producer, GREEN)


def test_remove_never_blocks_even_with_waiting_producers():
    market = Marketplace(1)
    producer, cart = market.register_producer(), market.new_cart()
    market.publish(producer, LINDEN)
    market.add_to_cart(cart, LINDEN)
    market.publish(producer, GREEN)
    blocked = Call(market.publish, producer, INDONEZIA, LONG_TIMEOUT_S)
    wait_for_waiters(market, producers=1)
    removing = Call(market.remove_from_cart, cart, LINDEN)
    assert removing.value() is True
    assert balanced(market).on_sale_per_producer == (2,)
    assert not blocked.done
    market.close()
    with pytest.raises(MarketClosedError):
        blocked.value()


def test_remove_is_false_when_the_cart_lacks_the_product(market):
    producer, cart = market.register_producer(), market.new_cart()
    assert not market.remove_from_cart(cart, LINDEN)
    assert market.remove_many(cart, LINDEN, 3) == 0
    market.publish(producer, LINDEN)
    market.add_to_cart(cart, LINDEN)
    before = balanced(market)
    assert not market.remove_from_cart(cart, PLAIN_LINDEN)
    assert not market.remove_from_cart(cart, GREEN)
    assert market.remove_many(cart, LINDEN, 0) == 0
    assert market.books() == before
    assert market.remove_from_cart(cart, LINDEN)
    assert not market.remove_from_cart(cart, LINDEN)
    assert balanced(market).in_carts == 0


def test_remove_many_removes_what_the_cart_has():
    market = Marketplace(5)
    producer, cart = market.register_producer(), market.new_cart()
    for _ in range(3):
        market.publish(producer, LINDEN)
    market.publish(producer, GREEN)
    assert market.add_many(cart, LINDEN, 3) == 3
    assert market.add_many(cart, GREEN, 1) == 1
    assert market.remove_many(cart, LINDEN, 2) == 2
    assert balanced(market).in_carts == 2
    assert market.remove_many(cart, LINDEN, 5) == 1
    assert market.remove_many(cart, LINDEN, 5) == 0
    assert market.place_order(cart) == [GREEN]
    books = balanced(market)
    assert books.on_sale == 3
    assert books.on_sale_per_producer == (3,)


def test_a_cart_only_gives_back_its_own_units(market):
    producer = market.register_producer()
    mine, other = market.new_cart(), market.new_cart()
    market.publish(producer, LINDEN)
    market.add_to_cart(other, LINDEN)
    assert not market.remove_from_cart(mine, LINDEN)
    assert market.place_order(other) == [LINDEN]


# -- place_order ----------------------------------------------------------------


def test_place_order_empties_the_cart_and_the_id_stays_valid():
    market = Marketplace(3)
    producer, cart = market.register_producer(), market.new_cart()
    market.publish(producer, LINDEN)
    market.publish(producer, INDONEZIA)
    market.publish(producer, LINDEN)
    assert market.add_many(cart, LINDEN, 2) == 2
    assert market.add_to_cart(cart, INDONEZIA)
    order = market.place_order(cart)
    assert Counter(order) == Counter({LINDEN: 2, INDONEZIA: 1})
    books = balanced(market)
    assert (books.ordered, books.orders, books.in_carts, books.on_sale) == (3, 1, 0, 0)
    assert market.place_order(cart) == []
    assert not market.remove_from_cart(cart, LINDEN)
    # The same cart id can shop again.
    assert market.publish(producer, GREEN)
    assert market.add_to_cart(cart, GREEN)
    assert market.place_order(cart) == [GREEN]
    books = balanced(market)
    assert (books.ordered, books.orders, books.carts) == (4, 3, 1)


def test_ordered_units_never_come_back(market):
    producer, cart = market.register_producer(), market.new_cart()
    market.publish(producer, LINDEN)
    market.add_to_cart(cart, LINDEN)
    market.place_order(cart)
    assert not market.remove_from_cart(cart, LINDEN)
    assert not market.add_to_cart(market.new_cart(), LINDEN)
    assert balanced(market).ordered == 1


# -- unknown ids ----------------------------------------------------------------


def test_unknown_ids_are_market_errors():
    assert issubclass(UnknownProducerError, MarketError)
    assert issubclass(UnknownCartError, MarketError)
    assert issubclass(InvalidArgumentError, MarketError)
    assert issubclass(MarketClosedError, MarketError)
    assert issubclass(MarketError, MpmarketError)


def _stocked(market: Marketplace) -> tuple[int, int]:
    """One producer with a unit on sale, one cart holding another unit."""
    producer, cart = market.register_producer(), market.new_cart()
    market.publish(producer, LINDEN)
    market.publish(producer, LINDEN)
    market.add_to_cart(cart, LINDEN)
    return producer, cart


@pytest.mark.parametrize("producer_id", [1, 99, -1])
def test_unknown_producer_id(market, producer_id):
    _stocked(market)
    before = market.books()
    with pytest.raises(UnknownProducerError) as raised:
        market.publish(producer_id, GREEN)
    assert raised.value.producer_id == producer_id
    assert str(producer_id) in str(raised.value)
    with pytest.raises(UnknownProducerError):
        market.publish(producer_id, GREEN, 0.5)
    assert market.books() == before


@pytest.mark.parametrize("cart_id", [1, 99, -1])
@pytest.mark.parametrize(
    "operation",
    [
        lambda m, c: m.add_to_cart(c, LINDEN),
        lambda m, c: m.add_to_cart(c, LINDEN, 0.5),
        lambda m, c: m.add_many(c, LINDEN, 1),
        lambda m, c: m.remove_from_cart(c, LINDEN),
        lambda m, c: m.remove_many(c, LINDEN, 1),
        lambda m, c: m.place_order(c),
    ],
    ids=["add", "add-wait", "add_many", "remove", "remove_many", "place_order"],
)
def test_unknown_cart_id(market, cart_id, operation):
    _stocked(market)
    before = market.books()
    with pytest.raises(UnknownCartError) as raised:
        operation(market, cart_id)
    assert raised.value.cart_id == cart_id
    assert str(cart_id) in str(raised.value)
    assert market.books() == before


# -- invalid arguments ----------------------------------------------------------

NAN = math.nan
INVALID_CALLS = {
    "publish-not-a-product": lambda m, p, c: m.publish(p, "Linden"),
    "publish-none": lambda m, p, c: m.publish(p, None),
    "publish-product-class": lambda m, p, c: m.publish(p, Tea),
    "publish-negative-timeout": lambda m, p, c: m.publish(p, GREEN, -1),
    "publish-nan-timeout": lambda m, p, c: m.publish(p, GREEN, NAN),
    "publish-string-timeout": lambda m, p, c: m.publish(p, GREEN, "1"),
    "publish-bool-timeout": lambda m, p, c: m.publish(p, GREEN, True),
    "publish-bool-id": lambda m, p, c: m.publish(False, GREEN),
    "publish-true-id": lambda m, p, c: m.publish(True, GREEN),
    "publish-float-id": lambda m, p, c: m.publish(0.0, GREEN),
    "publish-string-id": lambda m, p, c: m.publish("0", GREEN),
    "add-not-a-product": lambda m, p, c: m.add_many(c, ("Linden", 9), 1),
    "add-negative-quantity": lambda m, p, c: m.add_many(c, LINDEN, -1),
    "add-float-quantity": lambda m, p, c: m.add_many(c, LINDEN, 1.0),
    "add-bool-quantity": lambda m, p, c: m.add_many(c, LINDEN, True),
    "add-nan-timeout": lambda m, p, c: m.add_many(c, LINDEN, 1, NAN),
    "add-negative-timeout": lambda m, p, c: m.add_many(c, LINDEN, 1, -0.5),
    "add-bool-cart": lambda m, p, c: m.add_many(False, LINDEN, 1),
    "add-true-cart": lambda m, p, c: m.add_many(True, LINDEN, 1),
    "add_to_cart-nan-timeout": lambda m, p, c: m.add_to_cart(c, LINDEN, NAN),
    "add_to_cart-bool-cart": lambda m, p, c: m.add_to_cart(False, LINDEN),
    "remove-not-a-product": lambda m, p, c: m.remove_many(c, "Linden", 1),
    "remove-negative-quantity": lambda m, p, c: m.remove_many(c, LINDEN, -1),
    "remove-bool-quantity": lambda m, p, c: m.remove_many(c, LINDEN, True),
    "remove-bool-cart": lambda m, p, c: m.remove_many(False, LINDEN, 1),
    "remove_from_cart-bool-cart": lambda m, p, c: m.remove_from_cart(False, LINDEN),
    "remove_from_cart-none": lambda m, p, c: m.remove_from_cart(c, None),
    "place_order-bool-cart": lambda m, p, c: m.place_order(False),
    "place_order-float-cart": lambda m, p, c: m.place_order(0.0),
}


@pytest.mark.parametrize("call", INVALID_CALLS.values(), ids=INVALID_CALLS.keys())
def test_invalid_arguments_are_refused_and_change_nothing(call):
    market = Marketplace(3)
    producer, cart = _stocked(market)
    # Ids 0 and 1 exist, so a bool id would hit a real producer or cart if
    # it were taken for an int.
    market.register_producer()
    market.new_cart()
    before = market.books()
    with pytest.raises(InvalidArgumentError):
        call(market, producer, cart)
    assert market.books() == before
    assert market.place_order(cart) == [LINDEN]


# -- blocking publish -----------------------------------------------------------


def _full_producer(market: Marketplace) -> int:
    producer = market.register_producer()
    while market.publish(producer, LINDEN):
        pass
    return producer


def test_blocked_publish_is_completed_the_moment_an_add_frees_a_slot(market):
    producer, cart = _full_producer(market), market.new_cart()
    blocked = Call(market.publish, producer, INDONEZIA, LONG_TIMEOUT_S)
    wait_for_waiters(market, producers=1)
    books = balanced(market)
    assert books.published == 2
    assert not blocked.done
    assert market.add_to_cart(cart, LINDEN)
    # The add published the waiting unit itself, before the publisher woke.
    books = balanced(market)
    assert books.published == 3
    assert books.on_sale_per_producer == (2,)
    assert blocked.value() is True
    assert blocked.elapsed < LONG_TIMEOUT_S
    assert balanced(market).waiting_producers == 0
    assert market.add_to_cart(cart, INDONEZIA)


def test_blocked_publish_times_out_with_false_and_leaves_no_waiter(market):
    producer = _full_producer(market)
    before = market.books()
    assert market.publish(producer, INDONEZIA, 0.05) is False
    assert market.books() == before
    assert before.waiting_producers == 0


def test_blocked_publishes_are_served_in_order():
    market = Marketplace(1)
    producer, cart = _full_producer(market), market.new_cart()
    first = Call(market.publish, producer, GREEN, LONG_TIMEOUT_S)
    wait_for_waiters(market, producers=1)
    second = Call(market.publish, producer, INDONEZIA, LONG_TIMEOUT_S)
    wait_for_waiters(market, producers=2)
    assert market.add_to_cart(cart, LINDEN)
    assert first.value() is True
    assert not second.done
    assert balanced(market).waiting_producers == 1
    assert not market.add_to_cart(cart, INDONEZIA)
    assert market.add_to_cart(cart, GREEN)
    assert second.value() is True
    assert market.add_to_cart(cart, INDONEZIA)
    books = balanced(market)
    assert (books.published, books.in_carts, books.waiting_producers) == (3, 3, 0)


def test_a_new_publish_does_not_jump_a_waiting_one():
    market = Marketplace(1)
    producer, cart = _full_producer(market), market.new_cart()
    blocked = Call(market.publish, producer, GREEN, LONG_TIMEOUT_S)
    wait_for_waiters(market, producers=1)
    assert market.add_to_cart(cart, LINDEN)
    assert not market.publish(producer, INDONEZIA)  # the freed slot went to GREEN
    assert blocked.value() is True
    assert market.add_to_cart(cart, GREEN)


def test_blocked_publish_waits_while_its_producer_is_above_the_cap():
    market = Marketplace(1)
    producer = market.register_producer()
    mine, other = market.new_cart(), market.new_cart()
    market.publish(producer, LINDEN)
    market.add_to_cart(mine, LINDEN)
    market.publish(producer, GREEN)
    blocked = Call(market.publish, producer, INDONEZIA, LONG_TIMEOUT_S)
    wait_for_waiters(market, producers=1)
    assert market.remove_from_cart(mine, LINDEN)  # two on sale now, cap 1
    assert market.add_to_cart(other, GREEN)  # one on sale: still no free slot
    books = balanced(market)
    assert books.on_sale_per_producer == (1,)
    assert books.waiting_producers == 1
    assert not blocked.done
    assert market.add_to_cart(other, LINDEN)  # now a slot is free
    assert blocked.value() is True
    books = balanced(market)
    assert books.on_sale_per_producer == (1,)
    assert books.published == 3


def test_a_freed_slot_whose_unit_goes_straight_to_a_cart_serves_the_next_publisher():
    market = Marketplace(1)
    producer = _full_producer(market)
    buyer, waiting_cart = market.new_cart(), market.new_cart()
    wanting = Call(market.add_many, waiting_cart, GREEN, 1, LONG_TIMEOUT_S)
    wait_for_waiters(market, consumers=1)
    first = Call(market.publish, producer, GREEN, LONG_TIMEOUT_S)
    wait_for_waiters(market, consumers=1, producers=1)
    second = Call(market.publish, producer, INDONEZIA, LONG_TIMEOUT_S)
    wait_for_waiters(market, consumers=1, producers=2)
    # The add frees the slot; the first publisher's GREEN goes straight into
    # the waiting cart, so the slot is still free and the second one gets it.
    assert market.add_to_cart(buyer, LINDEN)
    assert wanting.value() == 1
    assert first.value() is True
    assert second.value() is True
    books = balanced(market)
    assert books.on_sale_per_producer == (1,)
    assert (books.waiting_consumers, books.waiting_producers) == (0, 0)
    assert market.add_to_cart(buyer, INDONEZIA)


@pytest.mark.parametrize("timeout", [math.inf, 1e12])
def test_blocked_publish_with_a_huge_timeout(timeout):
    market = Marketplace(1)
    producer, cart = _full_producer(market), market.new_cart()
    blocked = Call(market.publish, producer, GREEN, timeout)
    wait_for_waiters(market, producers=1)
    assert market.add_to_cart(cart, LINDEN)
    assert blocked.value() is True
    assert balanced(market).waiting_producers == 0


# -- blocking add ---------------------------------------------------------------


def test_blocked_add_many_is_filled_by_publishes(market):
    producer, cart = market.register_producer(), market.new_cart()
    blocked = Call(market.add_many, cart, LINDEN, 2, LONG_TIMEOUT_S)
    wait_for_waiters(market, consumers=1)
    assert market.publish(producer, LINDEN)
    # The unit went straight into the waiting cart: not on sale, no slot used.
    books = balanced(market)
    assert (books.on_sale, books.in_carts, books.on_sale_per_producer) == (0, 1, (0,))
    assert books.waiting_consumers == 1
    assert not blocked.done
    assert market.publish(producer, LINDEN)
    assert blocked.value() == 2
    assert blocked.elapsed < LONG_TIMEOUT_S
    books = balanced(market)
    assert (books.in_carts, books.waiting_consumers) == (2, 0)
    assert market.place_order(cart) == [LINDEN, LINDEN]


def test_blocked_add_many_is_filled_by_a_remove_from_another_cart(market):
    producer = market.register_producer()
    waiting_cart, other = market.new_cart(), market.new_cart()
    market.publish(producer, LINDEN)
    assert market.add_to_cart(other, LINDEN)
    blocked = Call(market.add_many, waiting_cart, LINDEN, 1, LONG_TIMEOUT_S)
    wait_for_waiters(market, consumers=1)
    assert market.remove_from_cart(other, LINDEN)
    assert blocked.value() == 1
    books = balanced(market)
    assert (books.on_sale, books.in_carts, books.on_sale_per_producer) == (0, 1, (0,))
    assert market.place_order(other) == []
    assert market.place_order(waiting_cart) == [LINDEN]


def test_blocked_add_many_takes_what_is_on_sale_then_waits_for_the_rest():
    market = Marketplace(2)
    producer = market.register_producer()
    waiting_cart, other = market.new_cart(), market.new_cart()
    market.publish(producer, LINDEN)
    market.publish(producer, LINDEN)
    market.add_to_cart(other, LINDEN)
    blocked = Call(market.add_many, waiting_cart, LINDEN, 3, LONG_TIMEOUT_S)
    wait_for_waiters(market, consumers=1)
    assert balanced(market).on_sale == 0
    assert market.publish(producer, LINDEN)
    assert not blocked.done
    assert market.remove_from_cart(other, LINDEN)
    assert blocked.value() == 3
    assert market.place_order(waiting_cart) == [LINDEN] * 3
    books = balanced(market)
    assert (books.ordered, books.on_sale, books.waiting_consumers) == (3, 0, 0)


def test_blocked_adds_are_served_in_order(market):
    producer = market.register_producer()
    first_cart, second_cart = market.new_cart(), market.new_cart()
    first = Call(market.add_many, first_cart, LINDEN, 1, LONG_TIMEOUT_S)
    wait_for_waiters(market, consumers=1)
    second = Call(market.add_many, second_cart, LINDEN, 1, LONG_TIMEOUT_S)
    wait_for_waiters(market, consumers=2)
    market.publish(producer, LINDEN)
    assert first.value() == 1
    assert not second.done
    market.publish(producer, LINDEN)
    assert second.value() == 1
    assert balanced(market).waiting_consumers == 0


def test_a_waiting_add_only_takes_its_own_kind(market):
    producer, cart = market.register_producer(), market.new_cart()
    blocked = Call(market.add_many, cart, LINDEN, 1, LONG_TIMEOUT_S)
    wait_for_waiters(market, consumers=1)
    market.publish(producer, PLAIN_LINDEN)
    market.publish(producer, GREEN)
    books = balanced(market)
    assert (books.on_sale, books.in_carts) == (2, 0)
    assert not blocked.done
    market.close()
    with pytest.raises(MarketClosedError):
        blocked.value()


def test_timed_out_add_returns_the_partial_count_and_leaves_no_waiter(market):
    producer, cart = market.register_producer(), market.new_cart()
    market.publish(producer, LINDEN)
    assert market.add_many(cart, LINDEN, 3, 0.05) == 1
    books = balanced(market)
    assert books.waiting_consumers == 0
    assert books.in_carts == 1
    # Nobody waits any more: the next unit goes on sale, not into the cart.
    assert market.publish(producer, LINDEN)
    books = balanced(market)
    assert (books.on_sale, books.in_carts) == (1, 1)
    assert market.place_order(cart) == [LINDEN]


def test_timed_out_add_counts_what_arrived_while_it_waited(market):
    producer, cart = market.register_producer(), market.new_cart()
    market.publish(producer, LINDEN)
    blocked = Call(market.add_many, cart, LINDEN, 3, 1.0)
    wait_for_waiters(market, consumers=1)
    assert market.publish(producer, LINDEN)
    assert blocked.value() == 2
    books = balanced(market)
    assert (books.waiting_consumers, books.in_carts, books.on_sale) == (0, 2, 0)
    assert market.publish(producer, LINDEN)
    assert balanced(market).on_sale == 1


def test_timed_out_add_with_nothing_returns_zero(market):
    cart = market.new_cart()
    assert market.add_to_cart(cart, LINDEN, 0.02) is False
    assert market.add_many(cart, LINDEN, 2, 0.02) == 0
    assert balanced(market).waiting_consumers == 0


@pytest.mark.parametrize("timeout", [math.inf, 1e12])
def test_blocked_add_with_a_huge_timeout(timeout):
    market = Marketplace(1)
    producer, cart = market.register_producer(), market.new_cart()
    blocked = Call(market.add_many, cart, LINDEN, 1, timeout)
    wait_for_waiters(market, consumers=1)
    market.publish(producer, LINDEN)
    assert blocked.value() == 1
    assert balanced(market).waiting_consumers == 0


# -- close ----------------------------------------------------------------------


def test_close_wakes_blocked_publish_and_add_with_market_closed_error():
    market = Marketplace(1)
    producer, cart = _full_producer(market), market.new_cart()
    publishing = Call(market.publish, producer, GREEN, LONG_TIMEOUT_S)
    adding = Call(market.add_many, cart, INDONEZIA, 2, LONG_TIMEOUT_S)
    wait_for_waiters(market, consumers=1, producers=1)
    market.close()
    with pytest.raises(MarketClosedError):
        publishing.value()
    with pytest.raises(MarketClosedError):
        adding.value()
    assert publishing.elapsed < LONG_TIMEOUT_S
    assert adding.elapsed < LONG_TIMEOUT_S
    books = balanced(market)
    assert books.closed
    assert (books.waiting_consumers, books.waiting_producers) == (0, 0)
    assert books.published == 1


def test_close_keeps_what_a_waiting_add_already_received():
    market = Marketplace(1)
    producer, cart = market.register_producer(), market.new_cart()
    adding = Call(market.add_many, cart, LINDEN, 3, LONG_TIMEOUT_S)
    wait_for_waiters(market, consumers=1)
    market.publish(producer, LINDEN)
    market.close()
    with pytest.raises(MarketClosedError):
        adding.value()
    books = balanced(market)
    assert (books.published, books.in_carts, books.on_sale) == (1, 1, 0)


def test_close_with_huge_timeouts_wakes_everyone():
    market = Marketplace(1)
    producer, cart = _full_producer(market), market.new_cart()
    publishing = Call(market.publish, producer, GREEN, math.inf)
    adding = Call(market.add_many, cart, INDONEZIA, 1, math.inf)
    wait_for_waiters(market, consumers=1, producers=1)
    market.close()
    with pytest.raises(MarketClosedError):
        publishing.value()
    with pytest.raises(MarketClosedError):
        adding.value()


def test_close_is_idempotent(market):
    assert not market.closed
    market.close()
    market.close()
    assert market.closed
    assert market.books().closed


CALLS_AFTER_CLOSE = {
    "register_producer": lambda m, p, c: m.register_producer(),
    "new_cart": lambda m, p, c: m.new_cart(),
    "publish": lambda m, p, c: m.publish(p, GREEN),
    "publish-wait": lambda m, p, c: m.publish(p, GREEN, 1.0),
    "add_to_cart": lambda m, p, c: m.add_to_cart(c, LINDEN),
    "add_many-wait": lambda m, p, c: m.add_many(c, LINDEN, 1, 1.0),
    "remove_from_cart": lambda m, p, c: m.remove_from_cart(c, LINDEN),
    "remove_many": lambda m, p, c: m.remove_many(c, LINDEN, 1),
    "place_order": lambda m, p, c: m.place_order(c),
}


@pytest.mark.parametrize("call", CALLS_AFTER_CLOSE.values(), ids=CALLS_AFTER_CLOSE.keys())
def test_calls_after_close_raise_market_closed_error(call):
    market = Marketplace(3)
    producer, cart = _stocked(market)
    market.close()
    before = market.books()
    with pytest.raises(MarketClosedError):
        call(market, producer, cart)
    assert market.books() == before
    assert before.balanced


# -- exceptions travel through a manager: they must pickle ----------------------

EXCEPTIONS = [
    MpmarketError("boom"),
    MarketError("refused"),
    UnknownProducerError(42),
    UnknownProducerError(-1),
    UnknownCartError(7),
    InvalidArgumentError("quantity must be a non-negative int, got -1"),
    MarketClosedError(),
    MarketClosedError("closed for the night"),
    MarketUnavailableError("cannot reach 127.0.0.1:5000"),
    WorkloadError("shop.toml", "producers[0].price", "a number", "'x'"),
    WorkloadError("shop.toml", "", "a table"),
    RunError("producer prod1 died"),
]


@pytest.mark.parametrize("error", EXCEPTIONS, ids=lambda e: type(e).__name__)
def test_exceptions_pickle_with_type_and_args(error):
    clone = pickle.loads(pickle.dumps(error))
    assert type(clone) is type(error)
    assert clone.args == error.args
    assert str(clone) == str(error)
    assert vars(clone) == vars(error)


def test_exceptions_raised_by_the_market_pickle(market):
    producer, cart = _stocked(market)
    raised = []
    for operation in (
        lambda: market.publish(7, LINDEN),
        lambda: market.place_order(7),
        lambda: market.add_many(cart, LINDEN, -1),
        lambda: market.publish(producer, LINDEN, NAN),
    ):
        with pytest.raises(MarketError) as caught:
            operation()
        raised.append(caught.value)
    market.close()
    with pytest.raises(MarketClosedError) as caught:
        market.new_cart()
    raised.append(caught.value)
    for error in raised:
        clone = pickle.loads(pickle.dumps(error))
        assert type(clone) is type(error)
        assert clone.args == error.args
        assert str(clone) == str(error)


# -- the operation log ----------------------------------------------------------

STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z ")


@pytest.fixture
def oplog(tmp_path):
    path = tmp_path / "operations.log"
    logger = operation_logger(path)
    yield path, logger
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()


def _log_lines(logger: logging.Logger, path) -> list[str]:
    for handler in logger.handlers:
        handler.flush()
    return path.read_text(encoding="utf-8").splitlines()


def test_operation_log_writes_one_line_per_operation(oplog):
    path, logger = oplog
    market = Marketplace(1, logger=logger)
    producer = market.register_producer()  # 1
    cart = market.new_cart()  # 2
    market.publish(producer, LINDEN)  # 3
    market.publish(producer, LINDEN)  # 4: refused, logged too
    market.add_to_cart(cart, LINDEN)  # 5
    market.add_many(cart, LINDEN, 2)  # 6
    market.remove_from_cart(cart, LINDEN)  # 7
    market.remove_many(cart, LINDEN, 3)  # 8
    market.add_many(cart, LINDEN, 1, 0.01)  # 9
    market.place_order(cart)  # 10
    market.close()  # 11
    lines = _log_lines(logger, path)
    assert len(lines) == 11, lines
    for line in lines:
        assert STAMP.match(line), line
    text = "\n".join(lines)
    assert "register_producer() -> 0" in lines[0]
    assert "new_cart() -> 0" in lines[1]
    assert "Tea(name='Linden', price=9, type='Herbal')" in lines[2]
    assert lines[2].endswith("-> True")
    assert lines[3].endswith("-> False")
    assert "close()" in lines[10]
    assert "place_order(0) -> [Tea(name='Linden', price=9, type='Herbal')]" in text


def test_operation_log_stamps_are_utc(oplog, monkeypatch):
    path, logger = oplog
    # A local zone far from UTC (POSIX: UTC+05:45), so local time would show.
    monkeypatch.setenv("TZ", "XYZ-05:45")
    time.tzset()
    try:
        market = Marketplace(1, logger=logger)
        market.register_producer()
        now = datetime.now(UTC)
    finally:
        monkeypatch.undo()
        time.tzset()
    (line,) = _log_lines(logger, path)
    match = STAMP.match(line)
    assert match, line
    stamp = datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=UTC)
    assert abs(stamp - now) < timedelta(minutes=5)


def test_operation_log_from_threads(oplog):
    path, logger = oplog
    market = Marketplace(4, logger=logger)
    calls = [Call(market.register_producer) for _ in range(8)]
    ids = sorted(call.value() for call in calls)
    assert ids == list(range(8))
    lines = _log_lines(logger, path)
    assert len(lines) == 8
    assert sorted(int(line.rsplit("-> ", 1)[1]) for line in lines) == ids
