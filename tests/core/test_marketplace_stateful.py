"""The Marketplace against a model, over random sequences of operations.

``MarketMachine`` drives one market through hypothesis-chosen operations and
keeps a plain model beside it: per producer the count on sale, per kind the
FIFO of the producer ids on sale, each cart as a list of (producer id) units
per kind. The books must match the model after every step.

``test_random_operations_from_many_threads`` runs hypothesis-generated
operation lists on several threads at once and checks conservation at the end.
"""

from __future__ import annotations

import math
import threading
from collections import Counter, deque
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from mpmarket.core.market import LAPSE_GRACE_S, Marketplace
from mpmarket.errors import (
    CartRevokedError,
    InvalidArgumentError,
    MarketClosedError,
    UnknownCartError,
    UnknownProducerError,
)
from mpmarket.products import Product, Tea

# Two of them share name and price but not class: they must never mix.
PRODUCTS = (Tea("Linden", 9, "Herbal"), Product("Linden", 9))
# Few producers and carts, so that units of one kind from several producers
# meet in the same queue and FIFO order shows in the per-producer counts.
MAX_PRODUCERS = 3
MAX_CARTS = 3
products = st.sampled_from(PRODUCTS)
quantities = st.integers(min_value=0, max_value=4)
# Drawn as an index into the ids handed out so far (taken modulo their count).
indices = st.integers(min_value=0, max_value=31)

WAIT_S = 5.0

_LINDEN = PRODUCTS[0]
# (name, the error expected while the market is open, the call); ids -1 and
# 10**6 are never handed out. Argument checks may come before or after the
# closed check, so once closed either error is accepted.
BAD_CALLS = [
    ("publish-unknown", UnknownProducerError, lambda m: m.publish(10**6, _LINDEN)),
    ("publish-negative", UnknownProducerError, lambda m: m.publish(-1, _LINDEN, 1.0)),
    ("add-unknown", UnknownCartError, lambda m: m.add_many(10**6, _LINDEN, 1)),
    ("add_to_cart-negative", UnknownCartError, lambda m: m.add_to_cart(-1, _LINDEN, 1.0)),
    ("remove-unknown", UnknownCartError, lambda m: m.remove_many(10**6, _LINDEN, 1)),
    ("remove_from_cart-unknown", UnknownCartError, lambda m: m.remove_from_cart(-1, _LINDEN)),
    ("order-unknown", UnknownCartError, lambda m: m.place_order(10**6)),
    ("publish-not-a-product", InvalidArgumentError, lambda m: m.publish(0, "Linden")),
    ("add-negative-quantity", InvalidArgumentError, lambda m: m.add_many(0, _LINDEN, -1)),
    ("remove-bool-quantity", InvalidArgumentError, lambda m: m.remove_many(0, _LINDEN, True)),
    ("add-nan-timeout", InvalidArgumentError, lambda m: m.add_many(0, _LINDEN, 1, math.nan)),
    ("publish-negative-timeout", InvalidArgumentError, lambda m: m.publish(0, _LINDEN, -1)),
    ("order-bool-id", InvalidArgumentError, lambda m: m.place_order(False)),
    ("publish-bool-id", InvalidArgumentError, lambda m: m.publish(True, _LINDEN)),
]


class MarketMachine(RuleBasedStateMachine):
    """A Marketplace and a model of it, stepped together."""

    def __init__(self) -> None:
        super().__init__()
        self.market: Marketplace
        self.cap = 0
        self.on_sale_count: list[int] = []  # producer id -> units on sale
        self.fifo: dict[Product, deque[int]] = {}  # kind -> producer ids, oldest first
        self.carts: list[dict[Product, list[int]]] = []  # cart -> kind -> producer ids
        self.published = 0
        self.ordered = 0
        self.orders = 0
        self.closed = False
        self.revoked: set[int] = set()

    @initialize(
        cap=st.integers(min_value=1, max_value=3),
        producers=st.integers(min_value=0, max_value=MAX_PRODUCERS),
        carts=st.integers(min_value=0, max_value=MAX_CARTS),
    )
    def start(self, cap: int, producers: int, carts: int) -> None:
        """A market with some producers and carts already, to get busy sooner."""
        self.cap = cap
        self.market = Marketplace(cap)
        for _ in range(producers):
            self.register_producer()
        for _ in range(carts):
            self.new_cart()

    # -- helpers --------------------------------------------------------------

    def _producer(self, index: int) -> int:
        return index % len(self.on_sale_count)

    def live_carts(self) -> list[int]:
        return [cart for cart in range(len(self.carts)) if cart not in self.revoked]

    def _cart(self, index: int) -> int:
        live = self.live_carts()
        return live[index % len(live)]

    def _put_on_sale(self, producer: int, product: Product) -> None:
        self.fifo.setdefault(product, deque()).append(producer)
        self.on_sale_count[producer] += 1

    def _expect_closed(self, call: Any) -> None:
        before = self.market.books()
        with pytest.raises(MarketClosedError):
            call()
        assert self.market.books() == before

    # -- rules ----------------------------------------------------------------

    @precondition(lambda self: len(self.on_sale_count) < MAX_PRODUCERS)
    @rule()
    def register_producer(self) -> None:
        if self.closed:
            self._expect_closed(self.market.register_producer)
            return
        assert self.market.register_producer() == len(self.on_sale_count)
        self.on_sale_count.append(0)

    @precondition(lambda self: len(self.carts) < MAX_CARTS)
    @rule()
    def new_cart(self) -> None:
        if self.closed:
            self._expect_closed(self.market.new_cart)
            return
        assert self.market.new_cart() == len(self.carts)
        self.carts.append({})

    def _publish(self, producer: int, product: Product, wait: bool) -> None:
        expected = self.on_sale_count[producer] < self.cap
        # Wait only when a slot is free, so a step never blocks: it must
        # then return at once, like a publish with no timeout.
        timeout = WAIT_S if expected and wait else 0
        if self.closed:
            self._expect_closed(lambda: self.market.publish(producer, product, timeout))
            return
        assert self.market.publish(producer, product, timeout) is expected
        if expected:
            self.published += 1
            self._put_on_sale(producer, product)

    @precondition(lambda self: self.on_sale_count)
    @rule(index=indices, product=products, wait=st.booleans())
    def publish(self, index: int, product: Product, wait: bool) -> None:
        self._publish(self._producer(index), product, wait)

    @precondition(lambda self: self.on_sale_count)
    @rule(product=products, order=st.permutations(range(MAX_PRODUCERS)))
    def publish_from_every_producer(self, product: Product, order: list[int]) -> None:
        """One publish per producer, in a drawn order: queues that mix producers."""
        for producer in order:
            if producer < len(self.on_sale_count):
                self._publish(producer, product, wait=False)

    @precondition(lambda self: self.live_carts())
    @rule(index=indices, product=products, quantity=quantities, wait=st.booleans())
    def add_many(self, index: int, product: Product, quantity: int, wait: bool) -> None:
        cart_id = self._cart(index)
        queue = self.fifo.get(product, deque())
        expected = min(quantity, len(queue))
        timeout = WAIT_S if expected == quantity and wait else 0
        if self.closed:
            self._expect_closed(lambda: self.market.add_many(cart_id, product, quantity, timeout))
            return
        assert self.market.add_many(cart_id, product, quantity, timeout) == expected
        units = self.carts[cart_id].setdefault(product, [])
        for _ in range(expected):
            producer = queue.popleft()
            self.on_sale_count[producer] -= 1
            units.append(producer)
        if not units:
            del self.carts[cart_id][product]

    @precondition(lambda self: self.live_carts())
    @rule(index=indices, product=products, quantity=quantities)
    def remove_many(self, index: int, product: Product, quantity: int) -> None:
        cart_id = self._cart(index)
        if self.closed:
            self._expect_closed(lambda: self.market.remove_many(cart_id, product, quantity))
            return
        units = self.carts[cart_id].get(product, [])
        expected = min(quantity, len(units))
        assert self.market.remove_many(cart_id, product, quantity) == expected
        # The implementation gives back the unit it took last: that choice
        # decides which producer's count goes up, and the model follows it.
        for _ in range(expected):
            self._put_on_sale(units.pop(), product)
        if product in self.carts[cart_id] and not units:
            del self.carts[cart_id][product]

    @precondition(lambda self: self.live_carts())
    @rule(index=indices)
    def place_order(self, index: int) -> None:
        cart_id = self._cart(index)
        if self.closed:
            self._expect_closed(lambda: self.market.place_order(cart_id))
            return
        expected = Counter({kind: len(units) for kind, units in self.carts[cart_id].items()})
        order = self.market.place_order(cart_id)
        assert Counter(order) == expected
        self.carts[cart_id] = {}
        self.ordered += len(order)
        self.orders += 1

    @rule(call=st.sampled_from(BAD_CALLS))
    def bad_call(self, call: tuple[str, type[Exception], Any]) -> None:
        """An unknown id or an invalid argument: refused, and nothing changes."""
        _, expected, operation = call
        before = self.market.books()
        with pytest.raises((expected, MarketClosedError)) as raised:
            operation(self.market)
        if not self.closed:
            assert type(raised.value) is expected
        assert self.market.books() == before

    @precondition(lambda self: self.live_carts())
    @rule(index=indices)
    def release_cart(self, index: int) -> None:
        """The owner died: its units go back on sale, the cart is revoked."""
        cart_id = self._cart(index)
        released = 0
        for product, units in self.carts[cart_id].items():
            for producer in units:
                self._put_on_sale(producer, product)
                released += 1
        assert self.market.release_cart(cart_id) == released
        self.carts[cart_id] = {}
        self.revoked.add(cart_id)
        assert self.market.release_cart(cart_id) == 0
        with pytest.raises((CartRevokedError, MarketClosedError)):
            self.market.place_order(cart_id)

    # Closing ends the interesting part, so only after some shopping.
    @precondition(lambda self: self.orders >= 5)
    @rule()
    def close(self) -> None:
        self.market.close()
        self.closed = True

    # -- the books against the model ----------------------------------------

    @invariant()
    def books_match_the_model(self) -> None:
        books = self.market.books()
        in_carts = sum(len(units) for cart in self.carts for units in cart.values())
        on_sale = sum(len(queue) for queue in self.fifo.values())
        assert books.balanced
        assert books.queue_size_per_producer == self.cap
        assert books.producers == len(self.on_sale_count)
        assert books.carts == len(self.carts)
        assert books.published == self.published
        assert books.on_sale == on_sale
        assert books.in_carts == in_carts
        assert books.ordered == self.ordered
        assert books.orders == self.orders
        assert books.on_sale_per_producer == tuple(self.on_sale_count)
        assert (books.waiting_consumers, books.waiting_producers) == (0, 0)
        assert books.closed == self.closed
        assert sum(self.on_sale_count) == on_sale
        assert self.market.audit() == []


MarketMachine.TestCase.settings = settings(
    max_examples=300,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestMarketMachine = MarketMachine.TestCase


# -- many threads at once -------------------------------------------------------

publish_ops = st.tuples(st.just("publish"), products, st.sampled_from([0, 0, 0.002]))
add_ops = st.tuples(st.just("add"), products, quantities, st.sampled_from([0, 0, 0.002]))
remove_ops = st.tuples(st.just("remove"), products, quantities)
order_ops = st.tuples(st.just("order"))
operations = st.lists(st.one_of(publish_ops, add_ops, remove_ops, order_ops), max_size=30)


def _run_plan(
    market: Marketplace, plan: list[tuple[Any, ...]], barrier: threading.Barrier
) -> dict[str, Any]:
    """One agent: its own producer and cart; returns what it saw."""
    barrier.wait()
    producer = market.register_producer()
    cart = market.new_cart()
    published: Counter[Product] = Counter()
    taken: Counter[Product] = Counter()
    ordered: Counter[Product] = Counter()
    in_cart: Counter[Product] = Counter()
    for op in plan:
        if op[0] == "publish":
            _, product, timeout = op
            if market.publish(producer, product, timeout):
                published[product] += 1
        elif op[0] == "add":
            _, product, quantity, timeout = op
            got = market.add_many(cart, product, quantity, timeout)
            assert 0 <= got <= quantity
            taken[product] += got
            in_cart[product] += got
        elif op[0] == "remove":
            _, product, quantity = op
            gone = market.remove_many(cart, product, quantity)
            assert gone == min(quantity, in_cart[product])
            taken[product] -= gone
            in_cart[product] -= gone
        else:
            order = Counter(market.place_order(cart))
            assert order == +in_cart  # only this thread touches this cart
            ordered += order
            in_cart = Counter()
    return {
        "producer": producer,
        "cart": cart,
        "published": published,
        "taken": taken,
        "ordered": ordered,
        "in_cart": +in_cart,
    }


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cap=st.integers(min_value=1, max_value=3),
    plans=st.lists(operations, min_size=2, max_size=5),
)
def test_random_operations_from_many_threads(cap: int, plans: list[list[tuple[Any, ...]]]):
    market = Marketplace(cap)
    barrier = threading.Barrier(len(plans), timeout=WAIT_S)
    results: list[dict[str, Any] | None] = [None] * len(plans)
    errors: list[BaseException] = []

    def agent(index: int) -> None:
        try:
            results[index] = _run_plan(market, plans[index], barrier)
        except BaseException as error:
            errors.append(error)
            barrier.abort()

    threads = [threading.Thread(target=agent, args=(i,), daemon=True) for i in range(len(plans))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=WAIT_S)
    assert not any(thread.is_alive() for thread in threads), "an agent hung"
    if errors:
        raise errors[0]
    done = [result for result in results if result is not None]
    assert len(done) == len(plans)

    published = sum((r["published"] for r in done), Counter())
    taken = sum((r["taken"] for r in done), Counter())
    ordered = sum((r["ordered"] for r in done), Counter())
    in_carts = sum((r["in_cart"] for r in done), Counter())
    assert sorted(r["producer"] for r in done) == list(range(len(plans)))
    assert sorted(r["cart"] for r in done) == list(range(len(plans)))

    books = market.books()
    assert books.balanced
    assert (books.waiting_consumers, books.waiting_producers) == (0, 0)
    assert books.published == published.total()
    assert books.ordered == ordered.total()
    assert books.in_carts == in_carts.total()
    assert books.on_sale == published.total() - taken.total()
    assert sum(books.on_sale_per_producer) == books.on_sale
    assert taken == ordered + in_carts
    # Product by product, what is left on sale is what was published and not taken,
    # and it all reaches a cart that waits for it: a unit kept for a lapsed add
    # (its cart's place in line) goes to the next in line once the grace is over.
    drain_cart = market.new_cart()
    for product in PRODUCTS:
        left = published[product] - taken[product]
        patience = LAPSE_GRACE_S + WAIT_S if left else 0.0
        assert market.add_many(drain_cart, product, left, timeout=patience) == left
        assert market.add_many(drain_cart, product, 10**9) == 0
    books = market.books()
    assert books.on_sale == 0
    assert books.on_sale_per_producer == (0,) * len(plans)
    assert books.balanced
