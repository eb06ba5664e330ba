"""The classic market (the course's design) and its agents' waits, in threads.

Every thread is a daemon lined up with ``Barrier(timeout=...)`` and joined
with ``join(timeout=...)``: a hang fails the test instead of stalling it.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from mpmarket.core.agents import consume, produce
from mpmarket.core.classic import ClassicAgent, ClassicMarket, poll
from mpmarket.core.generate import generate
from mpmarket.core.workload import expected_purchases, purchase_line
from mpmarket.errors import (
    CartRevokedError,
    InvalidArgumentError,
    MarketClosedError,
    UnknownCartError,
    UnknownProducerError,
)
from mpmarket.products import Coffee, Product, Tea

LINDEN = Tea("Linden", 9, "Herbal")
SENCHA = Tea("Sencha", 7, "Green")
ARABICA = Coffee("Arabica", 3, 5.02, "LIGHT")

WAIT_S = 10.0  # barrier and join bound: a hang fails within it


def _thread(target: Callable[[], object], name: str) -> threading.Thread:
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread


def _join(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join(WAIT_S)
    assert not [thread.name for thread in threads if thread.is_alive()]


# -- the course's six, one try each -------------------------------------------


def test_publish_is_refused_once_the_producer_has_no_free_slot():
    market = ClassicMarket(2)
    producer = market.register_producer()
    assert [market.publish(producer, LINDEN) for _ in range(3)] == [True, True, False]
    assert market.free_slots[producer] == 0
    cart = market.new_cart()
    assert market.add_to_cart(cart, LINDEN)  # frees a slot
    assert market.publish(producer, ARABICA)
    assert not market.publish(producer, ARABICA)
    books = market.books()
    assert (books.published, books.on_sale, books.in_carts) == (3, 2, 1)
    assert books.on_sale_per_producer == (2,)
    assert books.waiting_producers == 1  # refused last, so asleep between tries
    assert books.balanced


def test_add_takes_the_first_matching_product_in_list_order():
    market = ClassicMarket(5)
    first, second = market.register_producer(), market.register_producer()
    market.publish(second, ARABICA)
    market.publish(first, SENCHA)
    market.publish(second, LINDEN)
    market.publish(first, LINDEN)
    cart = market.new_cart()
    assert market.add_to_cart(cart, LINDEN)
    assert market.carts[cart] == [(LINDEN, second)]  # published before first's
    assert market.products == [(ARABICA, second), (SENCHA, first), (LINDEN, first)]
    assert market.add_to_cart(cart, LINDEN)
    assert not market.add_to_cart(cart, LINDEN)
    assert market.books().waiting_consumers == 1
    assert market.free_slots == {first: 4, second: 4}


def test_remove_puts_the_unit_back_at_the_end_even_past_the_cap():
    market = ClassicMarket(2)
    producer = market.register_producer()
    market.publish(producer, LINDEN)
    market.publish(producer, ARABICA)
    cart = market.new_cart()
    assert market.add_to_cart(cart, LINDEN)
    assert market.publish(producer, SENCHA)  # the slot it freed
    assert market.remove_from_cart(cart, LINDEN)
    assert market.products == [(ARABICA, producer), (SENCHA, producer), (LINDEN, producer)]
    assert market.carts[cart] == []
    assert market.free_slots[producer] == -1  # a unit in a cart is never refused
    assert not market.publish(producer, LINDEN)
    assert not market.remove_from_cart(cart, LINDEN)  # the cart has none
    assert market.books().balanced and market.audit() == []


def test_an_order_empties_the_cart_which_stays_valid():
    market = ClassicMarket(5)
    producer = market.register_producer()
    for product in (LINDEN, ARABICA, LINDEN):
        market.publish(producer, product)
    cart = market.new_cart()
    for product in (ARABICA, LINDEN, LINDEN):
        assert market.add_to_cart(cart, product)
    assert market.place_order(cart) == [ARABICA, LINDEN, LINDEN]
    assert market.carts[cart] == []
    assert market.place_order(cart) == []
    books = market.books()
    assert (books.ordered, books.orders, books.sold_per_producer) == (3, 2, (3,))
    assert books.balanced and market.audit() == []


def test_ids_are_checked_and_a_closed_market_refuses_everything():
    market = ClassicMarket(1)
    with pytest.raises(InvalidArgumentError):
        ClassicMarket(0)
    with pytest.raises(UnknownProducerError):
        market.publish(0, LINDEN)
    with pytest.raises(UnknownCartError):
        market.add_to_cart(0, LINDEN)
    producer, cart = market.register_producer(), market.new_cart()
    market.close()
    market.close()  # twice is fine
    calls: list[Callable[[], object]] = [
        market.register_producer,
        market.new_cart,
        lambda: market.publish(producer, LINDEN),
        lambda: market.add_to_cart(cart, LINDEN),
        lambda: market.remove_from_cart(cart, LINDEN),
        lambda: market.place_order(cart),
    ]
    for call in calls:
        with pytest.raises(MarketClosedError):
            call()
    assert market.books().closed


def test_a_released_cart_goes_back_on_sale_and_its_owner_is_refused():
    market = ClassicMarket(3)
    producer = market.register_producer()
    for _ in range(3):
        market.publish(producer, LINDEN)
    victim, other = market.new_cart(), market.new_cart()
    assert market.add_to_cart(victim, LINDEN) and market.add_to_cart(victim, LINDEN)
    assert market.release_cart(victim) == 2
    assert market.release_cart(victim) == 0
    with pytest.raises(CartRevokedError):
        market.add_to_cart(victim, LINDEN)
    with pytest.raises(CartRevokedError):
        market.place_order(victim)
    with pytest.raises(UnknownCartError):
        market.release_cart(7)
    assert market.free_slots[producer] == 0
    assert market.add_to_cart(other, LINDEN)
    books = market.books()
    assert (books.on_sale, books.in_carts) == (2, 1) and books.balanced
    assert market.audit() == []


def test_waits_name_who_was_refused_and_what_fills_the_slots():
    market = ClassicMarket(1)
    producer = market.register_producer()
    market.publish(producer, ARABICA)
    market.publish(producer, LINDEN)  # refused: its slot holds an Arabica
    cart = market.new_cart()
    market.add_to_cart(cart, LINDEN)
    waits = market.waits()
    assert waits.consumers == ((cart, LINDEN, 1),)
    assert waits.producers == ((producer, LINDEN),)
    assert waits.slots == {producer: ((ARABICA, 1),)}


# -- the agents' waits: sleep and try again -------------------------------------


def test_poll_tries_once_without_a_timeout_and_again_after_each_sleep():
    tries: list[int] = []

    def refused() -> bool:
        tries.append(1)
        return False

    assert not poll(refused, 0.0, 1.0)
    assert len(tries) == 1
    assert not poll(refused, 0.02, 0.005)
    assert len(tries) >= 3  # the first try, then at least one after a sleep
    assert poll(lambda: len(tries) > 8 or refused(), 10.0, 0.001)


def test_a_refused_publish_sleeps_until_an_add_frees_a_slot():
    market = ClassicMarket(1)
    producer = market.register_producer()
    market.publish(producer, LINDEN)
    agent = ClassicAgent(market, retry_wait=0.001, republish_wait=0.001)
    outcome: list[bool] = []
    thread = _thread(lambda: outcome.append(agent.publish(producer, ARABICA, WAIT_S)), "producer")
    cart = market.new_cart()
    assert market.add_to_cart(cart, LINDEN)
    _join([thread])
    assert outcome == [True]
    assert market.products == [(ARABICA, producer)]


def test_add_many_waits_unit_by_unit_for_what_is_published_later():
    market = ClassicMarket(1)
    producer = market.register_producer()
    cart = market.new_cart()
    agent = ClassicAgent(market, retry_wait=0.001, republish_wait=0.001)
    assert agent.add_many(cart, LINDEN, 2, 0.0) == 0  # one try, nothing there
    got: list[int] = []
    thread = _thread(lambda: got.append(agent.add_many(cart, LINDEN, 3, WAIT_S)), "consumer")
    maker = ClassicAgent(market, retry_wait=0.001, republish_wait=0.001)
    for _ in range(3):
        assert maker.publish(producer, LINDEN, WAIT_S)  # one slot: each waits for the add
    _join([thread])
    assert got == [3]
    assert agent.remove_many(cart, LINDEN, 5) == 3
    assert market.books().on_sale == 3


def test_a_producer_asleep_between_tries_ends_with_market_closed():
    market = ClassicMarket(1)
    producer = market.register_producer()
    market.publish(producer, LINDEN)
    agent = ClassicAgent(market, retry_wait=0.01, republish_wait=0.01)
    raised: list[BaseException] = []

    def publish() -> None:
        try:
            agent.publish(producer, LINDEN, 3600.0)
        except MarketClosedError as error:
            raised.append(error)

    thread = _thread(publish, "producer")
    market.close()
    _join([thread])
    assert len(raised) == 1


# -- many threads ---------------------------------------------------------------


@pytest.fixture
def fast_switching() -> Iterator[None]:
    """Switch threads far more often than the default 5 ms, to shake out races."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(before)


@pytest.mark.usefixtures("fast_switching")
def test_books_balance_at_every_moment_under_the_agent_loops_in_threads():
    """Producers and consumers of a generated workload, a thread each, plus an auditor."""
    workload = generate(4, 8, sessions=4, seed=5, make_time=0.002, wait_time=0.002)
    market = ClassicMarket(workload.queue_size_per_producer)
    stop = threading.Event()
    orders: list[tuple[str, list[Product]]] = []
    problems: list[str] = []
    ready = threading.Barrier(len(workload.producers) + len(workload.consumers), timeout=WAIT_S)

    def producer(index: int) -> None:
        spec = workload.producers[index]
        with contextlib.suppress(MarketClosedError):  # the end of a producer
            produce(ClassicAgent.for_spec(market, spec), spec, stop, lambda _: ready.wait())

    def consumer(index: int) -> None:
        spec = workload.consumers[index]
        consume(
            ClassicAgent.for_spec(market, spec),
            spec,
            lambda name, products: orders.append((name, products)),
            stop,
            lambda _: ready.wait(),
        )

    def auditor() -> None:
        while not market.closed:
            books = market.books()
            if not books.balanced:
                problems.append(f"unbalanced: {books}")
            problems.extend(market.audit())

    makers = [_thread(lambda i=i: producer(i), f"p{i}") for i in range(len(workload.producers))]
    buyers = [_thread(lambda i=i: consumer(i), f"c{i}") for i in range(len(workload.consumers))]
    watcher = _thread(auditor, "auditor")
    _join(buyers)
    stop.set()
    market.close()
    _join([*makers, watcher])
    assert problems == []
    bought = Counter(purchase_line(name, p) for name, products in orders for p in products)
    assert bought == expected_purchases(workload)
    books = market.books()
    assert books.balanced and books.ordered == sum(bought.values())
    assert sum(books.sold_per_producer) == books.ordered
