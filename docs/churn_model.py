"""A model of `mpmarket bench churn` with an infinitely fast server.

Every call takes a fixed one-way delay to reach the market and as long for
its answer; the market itself costs nothing and hands units over exactly as
mpmarket's does (FIFO waiters, a unit published or put back goes straight to
the first waiter of its kind, a freed slot publishes a waiting producer's
unit at once, an add waits up to the consumers' patience). What it shows:
how many products a second the churn could buy at best, for a patience and a
round trip, so the benchmark's figures can be read against a bound.

    python docs/churn_model.py              # the table in docs/performance.md
    python docs/churn_model.py 4 8 5 50     # P C patience-ms one-way-us
    python docs/churn_model.py policies     # other hand-overs than FIFO

Not part of the package; standard library only.
"""

from __future__ import annotations

import heapq
import itertools
import random
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

CAP = 15  # the bench's queue size per producer
KINDS = 8  # the bench's eight kinds, published round robin


@dataclass(eq=False)
class _AddWait:
    consumer: int
    needed: int
    received: int = 0
    done: bool = False


@dataclass(eq=False)
class _Consumer:
    rng: random.Random
    kind: int = 0
    quantity: int = 0
    adds: int = 0
    in_cart: int = 0
    held: list[int] = field(default_factory=list)


class ChurnModel:
    """One churn of ``producers`` x ``consumers`` for ``duration`` simulated seconds."""

    def __init__(
        self, producers: int, consumers: int, patience: float, one_way: float, seed: int = 0
    ) -> None:
        self.patience = patience
        self.one_way = one_way
        self.events: list[tuple[float, int, Callable[..., None], tuple]] = []
        self.order = itertools.count()
        self.on_sale: list[deque[int]] = [deque() for _ in range(KINDS)]  # producer ids
        self.count = [0] * producers  # units on sale per producer
        self.add_waits: list[deque[_AddWait]] = [deque() for _ in range(KINDS)]
        self.publish_waits: list[deque[int]] = [deque() for _ in range(producers)]  # kinds
        self.next_kind = [index % KINDS for index in range(producers)]
        self.consumers = [_Consumer(random.Random(seed * 1_000_003 + i)) for i in range(consumers)]
        self.bought = 0
        self.calls = 0
        for producer in range(producers):
            self._call(0.0, self._publish, producer)
        for consumer in range(consumers):
            self._session(0.0, consumer)

    def run(self, duration: float) -> tuple[float, float]:
        """Products bought a second, and calls a product bought."""
        while self.events:
            now, _, action, args = heapq.heappop(self.events)
            if now > duration:
                break
            action(now, *args)
        return self.bought / duration, self.calls / max(self.bought, 1)

    # -- the clock and the wire ------------------------------------------------

    def _at(self, when: float, action: Callable[..., None], *args: object) -> None:
        heapq.heappush(self.events, (when, next(self.order), action, args))

    def _call(self, now: float, arrives: Callable[..., None], *args: object) -> None:
        self.calls += 1
        self._at(now + self.one_way, arrives, *args)

    def _answer(self, now: float, action: Callable[..., None], *args: object) -> None:
        self._at(now + self.one_way, action, *args)

    # -- the market ------------------------------------------------------------

    def _waiter_for(self, waits: deque[_AddWait]) -> _AddWait:
        """Who gets a unit of a kind several wait for: the first come (mpmarket's rule)."""
        return waits[0]

    def _put_on_sale(self, now: float, producer: int, kind: int) -> None:
        waits = self.add_waits[kind]
        if waits:
            wait = self._waiter_for(waits)
            wait.received += 1
            if wait.received == wait.needed:
                waits.remove(wait)
                wait.done = True
                self._answer(now, self._added, wait.consumer, wait.received)
            return
        self.on_sale[kind].append(producer)
        self.count[producer] += 1

    def _take(self, now: float, kind: int, quantity: int) -> int:
        taken = 0
        while self.on_sale[kind] and taken < quantity:
            producer = self.on_sale[kind].popleft()
            self.count[producer] -= 1
            taken += 1
            while self.publish_waits[producer] and self.count[producer] < CAP:
                self._put_on_sale(now, producer, self.publish_waits[producer].popleft())
                self._answer(now, self._published, producer)
        return taken

    # -- producers -------------------------------------------------------------

    def _publish(self, now: float, producer: int) -> None:
        kind = self.next_kind[producer]
        if self.count[producer] < CAP:
            self._put_on_sale(now, producer, kind)
            self._answer(now, self._published, producer)
        else:
            self.publish_waits[producer].append(kind)

    def _published(self, now: float, producer: int) -> None:
        self.next_kind[producer] = (self.next_kind[producer] + 1) % KINDS
        self._call(now, self._publish, producer)

    # -- consumers -------------------------------------------------------------

    def _session(self, now: float, consumer: int) -> None:
        state = self.consumers[consumer]
        state.adds, state.in_cart, state.held = 0, 0, []
        self._next_add(now, consumer)

    def _next_add(self, now: float, consumer: int) -> None:
        state = self.consumers[consumer]
        state.quantity = state.rng.randint(1, 5)
        state.kind = state.rng.randrange(KINDS)
        self._call(now, self._add, consumer)

    def _add(self, now: float, consumer: int) -> None:
        state = self.consumers[consumer]
        taken = self._take(now, state.kind, state.quantity)
        if taken == state.quantity:
            self._answer(now, self._added, consumer, taken)
            return
        wait = _AddWait(consumer, state.quantity - taken)
        self.add_waits[state.kind].append(wait)
        self._at(now + self.patience, self._expire, wait, state.kind, taken)

    def _expire(self, now: float, wait: _AddWait, kind: int, taken: int) -> None:
        if not wait.done:
            wait.done = True
            self.add_waits[kind].remove(wait)
            self._answer(now, self._added, wait.consumer, taken + wait.received)

    def _added(self, now: float, consumer: int, got: int) -> None:
        state = self.consumers[consumer]
        if got == 0:  # none came: another kind
            state.kind = (state.kind + state.rng.randrange(1, KINDS)) % KINDS
            self._call(now, self._add, consumer)
            return
        state.in_cart += got
        state.held.append(state.kind)
        state.adds += 1
        if state.adds < 3:
            self._next_add(now, consumer)
        elif state.rng.random() < 1 / 3:
            self._call(now, self._remove, consumer)
        else:
            self._call(now, self._order, consumer)

    def _remove(self, now: float, consumer: int) -> None:
        state = self.consumers[consumer]
        state.in_cart -= 1
        producer = state.rng.randrange(len(self.count))  # whose it was: not tracked here
        self._put_on_sale(now, producer, state.rng.choice(state.held))
        self._answer(now, lambda later: self._call(later, self._order, consumer))

    def _order(self, now: float, consumer: int) -> None:
        self.bought += self.consumers[consumer].in_cart
        self._answer(now, self._session, consumer)


class CompletesFirst(ChurnModel):
    """A unit goes to the first waiter it completes, else to the first waiter."""

    def _waiter_for(self, waits: deque[_AddWait]) -> _AddWait:
        return next((wait for wait in waits if wait.needed - wait.received == 1), waits[0])


class SmallestFirst(ChurnModel):
    """A unit goes to the waiter that needs the fewest more (not first come, first served)."""

    def _waiter_for(self, waits: deque[_AddWait]) -> _AddWait:
        return min(waits, key=lambda wait: wait.needed - wait.received)


def compare_policies() -> None:
    """mpmarket's FIFO hand-over against two that favour waiters close to done."""
    print("size   policy          products/s  calls/product  (5 ms, 50 us, 3 seeds)")
    for producers, consumers in ((4, 8), (16, 32)):
        for policy in (ChurnModel, CompletesFirst, SmallestFirst):
            runs = [policy(producers, consumers, 0.005, 25e-6, seed).run(3.0) for seed in range(3)]
            per_s = sum(run[0] for run in runs) / len(runs)
            per_product = sum(run[1] for run in runs) / len(runs)
            print(
                f"{producers}x{consumers:<4} {policy.__name__:14} {per_s:11,.0f} {per_product:14.2f}"
            )


def main(argv: list[str]) -> None:
    if argv == ["policies"]:
        compare_policies()
        return
    if argv:
        producers, consumers, patience_ms, one_way_us = (float(arg) for arg in argv)
        cases = [(int(producers), int(consumers), patience_ms, one_way_us)]
    else:
        cases = [
            (p, c, patience, one_way)
            for p, c in ((4, 8), (16, 32))
            for patience in (2, 3, 5)
            for one_way in (25, 50, 100)
        ]
    print("size   patience  round trip  products/s  calls/product")
    for producers, consumers, patience_ms, one_way_us in cases:
        model = ChurnModel(producers, consumers, patience_ms / 1000, one_way_us / 1e6)
        per_s, per_product = model.run(5.0)
        print(
            f"{producers}x{consumers:<4} {patience_ms:5.0f} ms {2 * one_way_us:8.0f} us "
            f"{per_s:11,.0f} {per_product:14.2f}"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
