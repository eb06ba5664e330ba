"""The course-API churn: what a user of the course's six methods writes, on either market.

Four kinds; producers publish them round robin with no make time, each queue
capped at 15, and a refused publish waits ``API_WAIT`` (1 ms); consumers add
one unit of a random kind, and if it is not there (or not within 1 ms) try a
new random kind; every third add removes a random unit of the cart, every
tenth places the order. Measured two ways in the same round:

- **mpmarket**: its proxy's ``publish(..., timeout)`` and ``add_to_cart(...,
  timeout)``, the 1 ms waits inside the market;
- **classic processes**: the course's design on its stock BaseManager server
  (``mpmarket.net.classic``), one-try calls and client-side 1 ms sleeps.

``ChurnRound`` (the figures and checks of one churn) is shared with
``mpmarket.bench.churn``, whose own churn is mpmarket's native API.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.context import BaseContext

from mpmarket.bench.classic import CLASSIC_PROCESSES, BenchServer, open_market
from mpmarket.bench.results import _ratio
from mpmarket.bench.workers import RESULT_GRACE, _Fleet, _parent_gone
from mpmarket.core.books import MarketBooks
from mpmarket.core.generate import CATALOG
from mpmarket.errors import MarketClosedError
from mpmarket.net.wire import Address
from mpmarket.products import Product

__all__ = [
    "API_KINDS",
    "API_ORDER_EVERY",
    "API_REMOVE_EVERY",
    "API_WAIT",
    "PARENT_CHECK_CALLS",
    "ChurnRound",
    "api_churn_round",
]

# The course-API churn's four kinds, its wait after a refusal (in the market
# for mpmarket, a client-side sleep for the classic design), and its cadence
# of removes and orders, counted in successful adds.
API_KINDS: tuple[Product, ...] = CATALOG[:4]
API_WAIT = 0.001
API_REMOVE_EVERY = 3
API_ORDER_EVERY = 10

# Benchmark processes check every this many calls that their parent still lives.
PARENT_CHECK_CALLS = 64


@dataclass(frozen=True)
class ChurnRound:
    """One churn's counts over its window, and the market's books at its end."""

    seconds: float
    calls: int
    bought: int
    published: int
    books: MarketBooks
    server_rss: tuple[int | None, int | None] = (None, None)

    @property
    def bought_per_s(self) -> float:
        return self.bought / self.seconds

    def figures(self, floor_calls_per_s: float | None) -> dict[str, float | None]:
        return {
            "bought": self.bought,
            "calls": self.calls,
            "published": self.published,
            "bought_per_s": self.bought_per_s,
            "calls_per_s": self.calls / self.seconds,
            "rt_per_product": _ratio(self.calls, self.bought),
            "bought_vs_floor": _ratio(self.bought_per_s, floor_calls_per_s),
        }

    def checks(self) -> dict[str, bool]:
        return {
            "bought_matches_books": self.bought == self.books.ordered,
            "published_matches_books": self.published == self.books.published,
            "balanced": self.books.balanced,
        }


def _api_producer(
    design: str,
    address: Address,
    authkey: bytes,
    index: int,
    wait: float,
    ready: Callable[[], None],
) -> dict[str, int]:
    """Publish the four kinds round robin; a refusal waits ``wait`` (in the market or asleep)."""
    agent = open_market(design, address, authkey)
    producer_id = agent.register_producer()
    ready()
    kinds = API_KINDS
    kind = index % len(kinds)
    calls = published = 0
    classic = design == CLASSIC_PROCESSES
    publish = agent.market.publish if classic else agent.publish
    try:
        while calls % PARENT_CHECK_CALLS or not _parent_gone():
            calls += 1
            if classic:
                done = publish(producer_id, kinds[kind])
                if not done:
                    time.sleep(wait)
            else:
                done = publish(producer_id, kinds[kind], wait)
            if done:
                published += 1
                kind = (kind + 1) % len(kinds)
    except MarketClosedError:
        pass
    return {"calls": calls, "published": published}


def _api_consumer(
    design: str,
    address: Address,
    authkey: bytes,
    seed: int,
    wait: float,
    ready: Callable[[], None],
) -> dict[str, int]:
    """One unit of a random kind at a time; every third add a remove, every tenth an order."""
    agent = open_market(design, address, authkey)
    cart = agent.new_cart()
    rng = random.Random(seed)
    kinds = API_KINDS
    classic = design == CLASSIC_PROCESSES
    market = agent.market if classic else agent
    ready()
    calls = bought = adds = 0
    held: list[Product] = []
    kind = rng.randrange(len(kinds))
    try:
        while calls % PARENT_CHECK_CALLS or not _parent_gone():
            calls += 1
            if classic:
                added = market.add_to_cart(cart, kinds[kind])
                if not added:
                    time.sleep(wait)
            else:
                added = market.add_to_cart(cart, kinds[kind], wait)
            if not added:
                kind = (kind + rng.randrange(1, len(kinds))) % len(kinds)  # a new random kind
                continue
            adds += 1
            held.append(kinds[kind])
            if adds % API_REMOVE_EVERY == 0:
                calls += 1
                market.remove_from_cart(cart, held.pop(rng.randrange(len(held))))
            if adds % API_ORDER_EVERY == 0:
                calls += 1
                bought += len(market.place_order(cart))
                held.clear()
            kind = rng.randrange(len(kinds))
    except MarketClosedError:
        pass
    return {"calls": calls, "bought": bought}


def api_churn_round(
    design: str,
    producers: int,
    consumers: int,
    duration: float,
    ctx: BaseContext,
    *,
    seed: int = 0,
    wait: float = API_WAIT,
) -> ChurnRound:
    """One course-API churn of ``duration`` seconds on a fresh server of ``design``."""
    with BenchServer(design, ctx) as server, _Fleet(ctx, on_stop=server.close) as fleet:
        for index in range(producers):
            fleet.spawn(
                f"api-prod{index + 1}",
                _api_producer,
                design,
                server.address,
                server.authkey,
                index,
                wait,
            )
        for index in range(consumers):
            fleet.spawn(
                f"api-cons{index + 1}",
                _api_consumer,
                design,
                server.address,
                server.authkey,
                seed * 1_000_003 + index,
                wait,
            )
        fleet.wait_ready()
        started = fleet.release()
        time.sleep(duration)
        ended = time.perf_counter()
        server.close()
        results = fleet.results(RESULT_GRACE)
        books = server.books()
    producer_results, consumer_results = results[:producers], results[producers:]
    return ChurnRound(
        seconds=ended - started,
        calls=sum(r["calls"] for r in results),
        bought=sum(r["bought"] for r in consumer_results),
        published=sum(r["published"] for r in producer_results),
        books=books,
    )
