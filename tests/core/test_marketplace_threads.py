"""The Marketplace under many threads: unique ids, conservation, the six races.

Every thread is lined up with ``threading.Barrier(n, timeout=...)`` and joined
with ``join(timeout=...)``; a hang fails the test instead of stalling the run.
"""

from __future__ import annotations

import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mpmarket.core.books import MarketBooks
from mpmarket.core.market import Marketplace
from mpmarket.errors import MarketClosedError
from mpmarket.products import Coffee, Product, Tea

LINDEN = Tea("Linden", 9, "Herbal")
GREEN = Tea("Sencha", 7, "Green")
INDONEZIA = Coffee("Indonezia", 1, 5.05, "MEDIUM")
CUP = Product("Cup", 3)
PRODUCTS = (LINDEN, GREEN, INDONEZIA, CUP)

WAIT_S = 5.0  # barrier and join bound: a hang fails within it
ROUNDS = 1000  # rounds of each race: cheap, the same threads run them all


@pytest.fixture(autouse=True)
def fast_switching() -> Iterator[None]:
    """Switch threads far more often than the default 5 ms, to shake out races."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(before)


# Set while racing calls run; cleared while a race sets up or checks a round.
widening = threading.Event()


@pytest.fixture(autouse=True)
def yield_inside_critical_sections(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Let other threads run in the middle of the market's state changes.

    Under the GIL a check-then-act takes well under a microsecond, so a
    missing lock would almost never show. Yielding inside the helpers that
    move units widens those windows; with the lock held, the other threads
    just wait for it, and every result must stay the same.
    """
    for name in ("_put_on_sale", "_take_from_sale", "_slot_freed"):
        original = getattr(Marketplace, name)

        def yielding(self: Marketplace, *args: Any, _original: Any = original) -> Any:
            if widening.is_set():
                time.sleep(0)
            result = _original(self, *args)
            if widening.is_set():
                time.sleep(0)
            return result

        monkeypatch.setattr(Marketplace, name, yielding)
    widening.set()
    yield
    widening.clear()


def run_threads(*targets: Callable[[], Any]) -> list[Any]:
    """Start one thread per target, released together; return their results.

    An exception in a thread is re-raised here, after every thread ended.
    """
    barrier = threading.Barrier(len(targets), timeout=WAIT_S)
    running: list[int] = []
    results: list[Any] = [None] * len(targets)
    errors: list[BaseException] = []

    def run(index: int, target: Callable[[], Any]) -> None:
        try:
            barrier.wait()
            # The barrier wakes threads one by one; spin until all are awake,
            # so that the calls under test really overlap.
            running.append(index)
            deadline = time.monotonic() + WAIT_S
            while len(running) < len(targets):
                assert time.monotonic() < deadline, "a thread never started"
            results[index] = target()
        except BaseException as error:
            errors.append(error)
            barrier.abort()

    threads = [
        threading.Thread(target=run, args=(index, target), daemon=True)
        for index, target in enumerate(targets)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=WAIT_S)
    assert not any(thread.is_alive() for thread in threads), "a thread hung"
    if errors:
        raise errors[0]
    return results


def wait_until(market: Marketplace, predicate: Callable[[MarketBooks], bool]) -> None:
    """Poll the books until ``predicate`` holds; fail after ``WAIT_S``."""
    deadline = time.monotonic() + WAIT_S
    while not predicate(market.books()):
        assert time.monotonic() < deadline, "the market never reached the expected state"
        time.sleep(0.001)


def drain(market: Marketplace, products=PRODUCTS) -> Counter[Product]:
    """Take everything on sale into a new cart; return what was on sale.

    Units kept for a lapsed add (a timed-out try keeps its cart's place for
    ``LAPSE_GRACE_S``) are let go first, as the serving loop would: under
    load a consumer's last try may lapse just before its thread ends.
    """
    while (due := market.next_lapse()) is not None:
        time.sleep(max(0.0, due - time.monotonic()))
        market.let_lapses_go()
    cart = market.new_cart()
    found: Counter[Product] = Counter()
    for product in products:
        found[product] = market.add_many(cart, product, 10**9)
    books = market.books()
    assert books.on_sale == 0
    assert set(books.on_sale_per_producer) <= {0}
    return +found


# -- ids under contention -------------------------------------------------------


def test_sixteen_threads_register_producers_and_carts():
    market = Marketplace(1)
    per_thread = 100

    def register() -> tuple[list[int], list[int]]:
        producers, carts = [], []
        for _ in range(per_thread):
            producers.append(market.register_producer())
            carts.append(market.new_cart())
        return producers, carts

    results = run_threads(*[register] * 16)
    producers = [pid for mine, _ in results for pid in mine]
    carts = [cid for _, mine in results for cid in mine]
    total = 16 * per_thread
    assert sorted(producers) == list(range(total))
    assert sorted(carts) == list(range(total))
    for mine, theirs in results:
        assert mine == sorted(mine)  # each thread sees its ids increase
        assert theirs == sorted(theirs)
    books = market.books()
    assert (books.producers, books.carts) == (total, total)
    assert books.on_sale_per_producer == (0,) * total


# -- conservation under load ----------------------------------------------------


def test_producers_and_consumers_hammer_the_market():
    cap, producers, consumers, units_each = 3, 6, 8, 150
    market = Marketplace(cap)
    stop = threading.Event()

    def produce(seed: int) -> tuple[int, Counter[Product]]:
        rng = random.Random(seed)
        producer = market.register_producer()
        published: Counter[Product] = Counter()
        for _ in range(units_each):
            product = rng.choice(PRODUCTS)
            while not market.publish(producer, product, 0.005):
                if stop.is_set():
                    return producer, published
            published[product] += 1
        return producer, published

    def consume(seed: int) -> tuple[Counter[Product], Counter[Product], Counter[Product]]:
        rng = random.Random(seed)
        cart = market.new_cart()
        taken: Counter[Product] = Counter()  # added minus removed
        ordered: Counter[Product] = Counter()
        in_cart: Counter[Product] = Counter()
        for _ in range(250):
            roll = rng.random()
            if roll < 0.6:
                product = rng.choice(PRODUCTS)
                got = market.add_many(cart, product, rng.randint(1, 3), rng.choice([0, 0.002]))
                in_cart[product] += got
                taken[product] += got
            elif roll < 0.85 and in_cart:
                product = rng.choice(sorted(in_cart, key=repr))
                quantity = rng.randint(1, 3)
                gone = market.remove_many(cart, product, quantity)
                assert gone == min(in_cart[product], quantity)
                in_cart[product] -= gone
                taken[product] -= gone
                in_cart = +in_cart
            else:
                order = Counter(market.place_order(cart))
                assert order == in_cart
                ordered += order
                in_cart = Counter()
        return taken, ordered, in_cart

    producing = [lambda seed=seed: produce(seed) for seed in range(producers)]
    consuming = [lambda seed=seed: consume(100 + seed) for seed in range(consumers)]

    def consumers_then_stop() -> list[Any]:
        try:
            return run_threads(*consuming)
        finally:
            stop.set()

    results = run_threads(consumers_then_stop, lambda: run_threads(*producing))
    consumer_results, producer_results = results

    published: Counter[Product] = sum((p for _, p in producer_results), Counter())
    taken: Counter[Product] = sum((t for t, _, _ in consumer_results), Counter())
    ordered: Counter[Product] = sum((o for _, o, _ in consumer_results), Counter())
    in_carts: Counter[Product] = sum((c for _, _, c in consumer_results), Counter())
    assert sorted(pid for pid, _ in producer_results) == list(range(producers))

    books = market.books()
    assert books.balanced
    assert (books.waiting_consumers, books.waiting_producers) == (0, 0)
    assert books.published == published.total()
    assert books.ordered == ordered.total()
    assert books.in_carts == in_carts.total()
    assert books.orders > 0
    # Everything taken is either ordered or still in a cart, product by product.
    assert taken == ordered + in_carts
    assert sum(books.on_sale_per_producer) == books.on_sale
    # What is left on sale is exactly what was published and not taken.
    on_sale = drain(market)
    assert on_sale == published - taken
    assert on_sale + taken == published


def test_blocking_producers_and_consumers_meet():
    cap, per_producer = 2, 40
    market = Marketplace(cap)
    producer_ids = [market.register_producer() for _ in range(4)]
    cart_ids = [market.new_cart() for _ in range(4)]
    total = per_producer * len(producer_ids)

    def produce(producer: int) -> int:
        published = 0
        try:
            for _ in range(per_producer):
                assert market.publish(producer, LINDEN, WAIT_S)
                published += 1
        except MarketClosedError:
            pass
        return published

    def consume(cart: int) -> int:
        got = market.add_many(cart, LINDEN, total // len(cart_ids), WAIT_S)
        assert len(market.place_order(cart)) == got
        return got

    results = run_threads(
        *[lambda p=p: produce(p) for p in producer_ids],
        *[lambda c=c: consume(c) for c in cart_ids],
    )
    assert results[: len(producer_ids)] == [per_producer] * len(producer_ids)
    assert results[len(producer_ids) :] == [total // len(cart_ids)] * len(cart_ids)
    books = market.books()
    assert books.balanced
    assert (books.published, books.ordered, books.on_sale) == (total, total, 0)
    assert (books.waiting_consumers, books.waiting_producers) == (0, 0)


def test_close_under_load_wakes_every_waiter():
    market = Marketplace(1)
    producers = [market.register_producer() for _ in range(4)]
    carts = [market.new_cart() for _ in range(4)]
    for producer in producers:
        market.publish(producer, LINDEN)

    def blocked_publish(producer: int) -> str:
        try:
            market.publish(producer, GREEN, 60.0)
        except MarketClosedError:
            return "closed"
        return "returned"

    def blocked_add(cart: int) -> str:
        try:
            market.add_many(cart, INDONEZIA, 1, 60.0)
        except MarketClosedError:
            return "closed"
        return "returned"

    def closer() -> str:
        wait_until(market, lambda b: b.waiting_producers == 4 and b.waiting_consumers == 4)
        market.close()
        market.close()
        return "closer"

    results = run_threads(
        *[lambda p=p: blocked_publish(p) for p in producers],
        *[lambda c=c: blocked_add(c) for c in carts],
        closer,
    )
    assert results == ["closed"] * 8 + ["closer"]
    books = market.books()
    assert books.closed and books.balanced
    assert (books.waiting_consumers, books.waiting_producers) == (0, 0)


# -- the six classic races ------------------------------------------------------


def race(
    rounds: int,
    setup: Callable[[], Any],
    ops: list[Callable[[Any], Any]],
    check: Callable[[Any, list[Any]], None],
) -> None:
    """Run ``ops`` together, one thread each, ``rounds`` times over.

    Each round ``setup()`` builds a fresh state, every thread calls its op on
    it at the same moment, then ``check(state, results)`` runs. The same
    threads serve every round, lined up by two barriers, so a round costs
    microseconds and a thousand rounds give the race many chances.
    """
    state: list[Any] = [None]
    running: list[int] = []
    results: list[Any] = [None] * len(ops)
    errors: list[BaseException] = []

    def start_round() -> None:
        widening.clear()
        running.clear()
        state[0] = setup()
        widening.set()

    def end_round() -> None:
        widening.clear()
        check(state[0], list(results))

    start = threading.Barrier(len(ops), action=start_round, timeout=WAIT_S)
    end = threading.Barrier(len(ops), action=end_round, timeout=WAIT_S)

    def run(index: int, op: Callable[[Any], Any]) -> None:
        try:
            for _ in range(rounds):
                start.wait()
                running.append(index)
                deadline = time.monotonic() + WAIT_S
                while len(running) < len(ops):  # all awake: the calls overlap
                    assert time.monotonic() < deadline, "a racer never started"
                results[index] = op(state[0])
                end.wait()
        except BaseException as error:
            errors.append(error)
            start.abort()
            end.abort()

    threads = [
        threading.Thread(target=run, args=(index, op), daemon=True) for index, op in enumerate(ops)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=WAIT_S)
    assert not any(thread.is_alive() for thread in threads), "a racer hung"
    # The barriers break in every thread once one fails: report the cause.
    errors.sort(key=lambda error: isinstance(error, threading.BrokenBarrierError))
    if errors:
        raise errors[0]


def test_race_two_registrations():
    market = Marketplace(1)
    seen: list[int] = []

    def check(_: None, ids: list[int]) -> None:
        assert ids[0] != ids[1]
        seen.extend(ids)

    race(ROUNDS, lambda: None, [lambda _: market.register_producer()] * 2, check)
    assert sorted(seen) == list(range(2 * ROUNDS))
    assert market.books().producers == 2 * ROUNDS
    assert market.books().on_sale_per_producer == (0,) * (2 * ROUNDS)


def test_race_two_publishes_at_the_cap():
    def setup() -> tuple[Marketplace, int]:
        market = Marketplace(2)
        producer = market.register_producer()
        assert market.publish(producer, LINDEN)  # one slot left
        return market, producer

    def check(state: tuple[Marketplace, int], results: list[bool]) -> None:
        market, _ = state
        assert sorted(results) == [False, True]
        books = market.books()
        assert books.on_sale_per_producer == (2,)
        assert (books.published, books.on_sale) == (2, 2)

    race(
        ROUNDS,
        setup,
        [lambda s: s[0].publish(s[1], GREEN), lambda s: s[0].publish(s[1], CUP)],
        check,
    )


def test_race_two_new_carts():
    market = Marketplace(1)
    seen: list[int] = []

    def check(_: None, ids: list[int]) -> None:
        assert ids[0] != ids[1]
        seen.extend(ids)

    race(ROUNDS, lambda: None, [lambda _: market.new_cart()] * 2, check)
    assert sorted(seen) == list(range(2 * ROUNDS))
    assert market.books().carts == 2 * ROUNDS


def test_race_two_adds_of_the_last_product():
    def setup() -> tuple[Marketplace, int, int]:
        market = Marketplace(1)
        producer = market.register_producer()
        first, second = market.new_cart(), market.new_cart()
        assert market.publish(producer, LINDEN)
        return market, first, second

    def check(state: tuple[Marketplace, int, int], results: list[bool]) -> None:
        market, first, second = state
        assert sorted(results) == [False, True]  # exactly one wins
        books = market.books()
        assert (books.on_sale, books.in_carts, books.on_sale_per_producer) == (0, 1, (0,))
        orders = [market.place_order(first), market.place_order(second)]
        assert orders[results.index(True)] == [LINDEN]
        assert orders[results.index(False)] == []

    race(
        ROUNDS,
        setup,
        [lambda s: s[0].add_to_cart(s[1], LINDEN), lambda s: s[0].add_to_cart(s[2], LINDEN)],
        check,
    )


def test_race_two_removes():
    def setup() -> tuple[Marketplace, int]:
        market = Marketplace(1)
        producer, cart = market.register_producer(), market.new_cart()
        assert market.publish(producer, LINDEN)
        assert market.add_to_cart(cart, LINDEN)
        return market, cart

    def check(state: tuple[Marketplace, int], results: list[bool]) -> None:
        market, cart = state
        assert sorted(results) == [False, True]
        books = market.books()
        assert (books.on_sale, books.in_carts, books.on_sale_per_producer) == (1, 0, (1,))
        assert market.place_order(cart) == []

    race(ROUNDS, setup, [lambda s: s[0].remove_from_cart(s[1], LINDEN)] * 2, check)


def test_race_concurrent_place_order():
    # A full cart, so that an order takes long enough for the race to show.
    contents = Counter({LINDEN: 30, GREEN: 20, CUP: 10})

    def setup() -> tuple[Marketplace, int]:
        market = Marketplace(contents.total())
        producer, cart = market.register_producer(), market.new_cart()
        for product, count in contents.items():
            for _ in range(count):
                assert market.publish(producer, product)
            assert market.add_many(cart, product, count) == count
        return market, cart

    def check(state: tuple[Marketplace, int], orders: list[list[Product]]) -> None:
        market, _ = state
        total = contents.total()
        assert sorted(map(len, orders)) == [0, total]  # one takes all, none twice
        assert Counter(orders[0] + orders[1]) == contents
        books = market.books()
        assert (books.ordered, books.orders, books.in_carts) == (total, 2, 0)

    race(ROUNDS, setup, [lambda s: s[0].place_order(s[1])] * 2, check)


def test_race_add_and_remove_of_one_kind_in_two_carts():
    def setup() -> tuple[Marketplace, int, int]:
        market = Marketplace(2)
        producer = market.register_producer()
        giving, taking = market.new_cart(), market.new_cart()
        assert market.publish(producer, LINDEN)
        assert market.add_to_cart(giving, LINDEN)
        assert market.publish(producer, LINDEN)
        return market, giving, taking

    def check(state: tuple[Marketplace, int, int], results: list[Any]) -> None:
        market, _, _ = state
        assert results == [True, 2]
        books = market.books()
        assert books.balanced
        assert (books.on_sale, books.in_carts, books.on_sale_per_producer) == (0, 2, (0,))

    race(
        ROUNDS,
        setup,
        [
            lambda s: s[0].remove_from_cart(s[1], LINDEN),
            lambda s: s[0].add_many(s[2], LINDEN, 2, WAIT_S),
        ],
        check,
    )


def test_race_place_order_against_add_and_remove_on_other_carts():
    def setup() -> tuple[Marketplace, int, int, int]:
        market = Marketplace(2)
        producer = market.register_producer()
        ordering, adding, removing = market.new_cart(), market.new_cart(), market.new_cart()
        market.publish(producer, LINDEN)
        market.publish(producer, GREEN)
        market.add_to_cart(ordering, LINDEN)
        market.add_to_cart(removing, GREEN)
        market.publish(producer, LINDEN)
        return market, ordering, adding, removing

    def check(state: tuple[Marketplace, int, int, int], results: list[Any]) -> None:
        market = state[0]
        assert results == [[LINDEN], True, True]
        books = market.books()
        assert books.balanced
        assert (books.ordered, books.in_carts, books.on_sale) == (1, 1, 1)

    race(
        ROUNDS // 4,
        setup,
        [
            lambda s: s[0].place_order(s[1]),
            lambda s: s[0].add_to_cart(s[2], LINDEN),
            lambda s: s[0].remove_from_cart(s[3], GREEN),
        ],
        check,
    )


def _closed_is_none(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except MarketClosedError:
        return None


def test_race_two_blocked_publishes_for_one_freed_slot():
    def setup() -> tuple[Marketplace, int, int]:
        market = Marketplace(1)
        producer, cart = market.register_producer(), market.new_cart()
        assert market.publish(producer, LINDEN)
        return market, producer, cart

    def free_one_slot_then_close(state: tuple[Marketplace, int, int]) -> bool:
        market, _, cart = state
        added = market.add_to_cart(cart, LINDEN)
        wait_until(market, lambda books: books.published == 2)
        market.close()  # ends the loser, still waiting for a slot
        return added

    def check(state: tuple[Marketplace, int, int], results: list[Any]) -> None:
        assert results[2] is True
        assert results[:2] in ([True, None], [None, True])  # exactly one got the slot
        books = state[0].books()
        assert books.on_sale_per_producer == (1,)
        assert books.published == 2
        assert books.balanced and books.waiting_producers == 0

    # Both may block; the one add frees one slot.
    race(
        50,
        setup,
        [
            lambda s: _closed_is_none(lambda: s[0].publish(s[1], GREEN, 30.0)),
            lambda s: _closed_is_none(lambda: s[0].publish(s[1], CUP, 30.0)),
            free_one_slot_then_close,
        ],
        check,
    )


def test_race_two_waiting_adds_for_one_publish():
    def setup() -> tuple[Marketplace, int, int, int]:
        market = Marketplace(1)
        producer = market.register_producer()
        return market, producer, market.new_cart(), market.new_cart()

    def publish_one_then_close(state: tuple[Marketplace, int, int, int]) -> bool:
        market, producer, _, _ = state
        published = market.publish(producer, LINDEN)
        wait_until(market, lambda books: books.in_carts == 1)
        market.close()  # ends the loser, still waiting for a unit
        return published

    def check(state: tuple[Marketplace, int, int, int], results: list[Any]) -> None:
        assert results[2] is True
        assert results[:2] in ([1, None], [None, 1])  # exactly one got the unit
        books = state[0].books()
        assert books.balanced and books.in_carts == 1 and books.on_sale == 0
        assert books.waiting_consumers == 0

    race(
        50,
        setup,
        [
            lambda s: _closed_is_none(lambda: s[0].add_many(s[2], LINDEN, 1, 30.0)),
            lambda s: _closed_is_none(lambda: s[0].add_many(s[3], LINDEN, 1, 30.0)),
            publish_one_then_close,
        ],
        check,
    )
