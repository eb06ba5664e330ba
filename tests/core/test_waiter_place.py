"""A waiter's place in line survives its tries (issue 14, section 7).

An add that times out short stays in line, lapsed, for LAPSE_GRACE_S: a
unit that comes in its turn is kept on sale for it, and the same cart's
retry takes its place and the unit, ahead of a consumer that came after it.
Deterministic: threads against a plain Marketplace, each step waited for.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from mpmarket.core import market as market_module
from mpmarket.core.market import Marketplace
from mpmarket.products import Tea

LINDEN = Tea("Linden", 9, "Herbal")
BOUND_S = 10.0  # a hang fails within it; nothing is timed


class Call:
    """A call on its own thread; ``value()`` waits for it (bounded)."""

    def __init__(self, function: Callable[..., Any], *args: Any) -> None:
        self.result: Any = None
        self.thread = threading.Thread(target=self._run, args=(function, *args), daemon=True)
        self.thread.start()

    def _run(self, function: Callable[..., Any], *args: Any) -> None:
        self.result = function(*args)

    @property
    def done(self) -> bool:
        return not self.thread.is_alive()

    def value(self) -> Any:
        self.thread.join(BOUND_S)
        assert self.done, "the call did not return"
        return self.result


def wait_for_consumers(market: Marketplace, count: int) -> None:
    done = threading.Event()
    for _ in range(int(BOUND_S / 0.001)):
        if market.books().waiting_consumers == count:
            return
        done.wait(0.001)
    raise AssertionError(f"{count} consumers never waited")


def audited(market: Marketplace) -> None:
    assert market.audit() == []


@pytest.fixture
def line() -> tuple[Marketplace, int, int, int]:
    """A market with a producer and two carts: A's try timed out, then B waits."""
    market = Marketplace(3)
    producer, cart_a, cart_b = market.register_producer(), market.new_cart(), market.new_cart()
    assert market.add_many(cart_a, LINDEN, 1, 0.01) == 0  # A waited first; its try ends
    return market, producer, cart_a, cart_b


def test_a_unit_published_between_two_tries_is_kept_for_the_first_waiter(line) -> None:
    market, producer, cart_a, cart_b = line
    b = Call(market.add_many, cart_b, LINDEN, 1, BOUND_S)
    wait_for_consumers(market, 1)  # B waits; A is between two tries
    assert market.publish(producer, LINDEN)
    audited(market)
    assert not b.done  # B came after A: the unit is A's
    assert market.books().on_sale == 1
    assert market.add_many(cart_a, LINDEN, 1, BOUND_S) == 1  # A's retry takes it at once
    assert not b.done
    assert market.publish(producer, LINDEN)
    assert b.value() == 1
    assert market.place_order(cart_a) == [LINDEN]
    assert market.place_order(cart_b) == [LINDEN]
    audited(market)


def test_the_retry_goes_back_to_its_place_ahead_of_later_waiters(line) -> None:
    market, producer, cart_a, cart_b = line
    b = Call(market.add_many, cart_b, LINDEN, 1, BOUND_S)
    wait_for_consumers(market, 1)
    a = Call(market.add_many, cart_a, LINDEN, 1, BOUND_S)  # the retry, before any unit
    wait_for_consumers(market, 2)
    assert market.publish(producer, LINDEN)
    assert a.value() == 1  # A was first in line, and still is
    assert not b.done
    assert market.publish(producer, LINDEN)
    assert b.value() == 1
    audited(market)


def test_a_place_survives_many_tries(line) -> None:
    market, producer, cart_a, cart_b = line
    b = Call(market.add_many, cart_b, LINDEN, 2, BOUND_S)
    wait_for_consumers(market, 1)
    for _ in range(3):  # A tries again and again, each try too short
        assert market.add_many(cart_a, LINDEN, 2, 0.01) == 0
    assert market.publish(producer, LINDEN)
    assert market.add_many(cart_a, LINDEN, 2, 0.01) == 1  # its one unit, kept for it
    assert market.publish(producer, LINDEN)
    assert market.add_many(cart_a, LINDEN, 1, BOUND_S) == 1
    assert not b.done
    assert market.publish(producer, LINDEN) and market.publish(producer, LINDEN)
    assert b.value() == 2
    audited(market)


@pytest.mark.parametrize("moves_on", ["place_order", "remove", "other add", "release"])
def test_a_cart_that_moves_on_gives_its_place_and_unit_to_the_next(line, moves_on: str) -> None:
    market, producer, cart_a, cart_b = line
    b = Call(market.add_many, cart_b, LINDEN, 1, BOUND_S)
    wait_for_consumers(market, 1)
    assert market.publish(producer, LINDEN)
    assert not b.done
    if moves_on == "place_order":
        assert market.place_order(cart_a) == []
    elif moves_on == "remove":
        assert market.remove_many(cart_a, LINDEN, 1) == 0
    elif moves_on == "other add":
        assert market.add_many(cart_a, Tea("Sencha", 7, "Green"), 1) == 0
    else:
        assert market.release_cart(cart_a) == 0
    assert b.value() == 1
    assert market.books().on_sale == 0
    audited(market)


def test_a_place_nobody_comes_back_for_lapses_after_the_grace(
    line, monkeypatch: pytest.MonkeyPatch
) -> None:
    market, producer, cart_a, cart_b = line
    clock = [1000.0]
    monkeypatch.setattr(market_module.time, "monotonic", lambda: clock[0])
    assert market.add_many(cart_a, LINDEN, 1, 0.01) == 0  # lapsed at 1000.0
    b = Call(market.add_many, cart_b, LINDEN, 1, BOUND_S)
    wait_for_consumers(market, 1)
    assert market.publish(producer, LINDEN)  # kept for A
    assert not b.done
    clock[0] += market_module.LAPSE_GRACE_S * 2  # A never came back
    assert market.publish(producer, LINDEN)  # the next event lets A's place go
    assert b.value() == 1
    assert market.books().on_sale == 1  # the second unit: nobody waits for it
    assert market.add_many(cart_a, LINDEN, 1) == 1  # A, late, queues like anyone
    audited(market)


def test_a_timed_out_try_is_not_counted_as_waiting_and_loses_nothing(line) -> None:
    market, producer, _cart_a, _cart_b = line
    assert market.books().waiting_consumers == 0
    assert market.waits().consumers == ()
    assert market.publish(producer, LINDEN)  # kept for A: on sale, in its slot
    books = market.books()
    assert (books.on_sale, books.in_carts, books.on_sale_per_producer) == (1, 0, (1,))
    audited(market)
    market.close()
    assert market.books().on_sale == 1


def test_a_kept_unit_reaches_the_next_waiter_when_nobody_comes_back(line) -> None:
    """No further event needed: the blocked waiter itself lets the place go after the grace."""
    market, producer, _cart_a, cart_b = line
    assert market.publish(producer, LINDEN)  # kept for A, who never comes back
    b = Call(market.add_many, cart_b, LINDEN, 1, BOUND_S)
    assert b.value() == 1  # within the grace (LAPSE_GRACE_S), not at B's timeout
    assert market.books().on_sale == 0
    audited(market)
