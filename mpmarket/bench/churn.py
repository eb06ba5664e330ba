"""``run_churn``: products bought per second under full load, against the floor and the classic.

mpmarket's own churn: producers publish eight kinds as fast as the market
lets them, consumers run endless three-add sessions, for ``duration``
seconds per size: products bought/s, market calls/s, round trips per
product, bought/s per floor call/s. ``_churn_round`` is also the leak check
of ``run_scale``. In the same round, the course-API churn
(``mpmarket.bench.apichurn``) on mpmarket and on the classic design as
processes: ``bought_vs_classic`` is an mpmarket case's bought/s over the
classic's of the same size and round.

Figures: ``bought``, ``calls``, ``published`` (counts in the window),
``bought_per_s``, ``calls_per_s``, ``rt_per_product`` (market calls of
producers and consumers per product bought), ``bought_vs_floor`` (bought/s
divided by the 8-client floor's calls/s), ``bought_vs_classic`` (mpmarket's
cases only); checks ``bought_matches_books``,
``published_matches_books``, ``balanced``. ``floor`` is the 8-client floor.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from multiprocessing.context import BaseContext

from mpmarket.bench.apichurn import API_WAIT, PARENT_CHECK_CALLS, ChurnRound, api_churn_round
from mpmarket.bench.classic import CLASSIC_PROCESSES, MPMARKET
from mpmarket.bench.floor import _floor_name, _floor_round
from mpmarket.bench.results import BenchResult, Case, Progress, _quiet, _ratio
from mpmarket.bench.workers import (
    RESULT_GRACE,
    _BenchServer,
    _Fleet,
    _parent_gone,
    _rss,
    _server_processes,
)
from mpmarket.core.generate import CATALOG
from mpmarket.core.workload import DEFAULT_QUEUE_SIZE
from mpmarket.errors import MarketClosedError
from mpmarket.net.client import connect
from mpmarket.net.wire import Address
from mpmarket.proc.context import process_context
from mpmarket.products import Product

__all__ = [
    "CHURN_ADD_WAIT",
    "CHURN_KINDS",
    "CHURN_MODES",
    "CHURN_PUBLISH_WAIT",
    "LEAK_WARMUP",
    "PARENT_CHECK_CALLS",
    "run_churn",
]

# How long a consumer's add waits in the market before it tries another kind.
# A few milliseconds: long enough that a unit published meanwhile is handed
# over, short enough that a consumer never idles on a kind nobody makes now.
CHURN_ADD_WAIT = 0.005

# How long a producer's publish waits for a free slot per call. Long, so a
# full producer sleeps in the server instead of spinning; closing the market
# wakes it at once.
CHURN_PUBLISH_WAIT = 1.0

# The products of the churn: eight kinds.
CHURN_KINDS: tuple[Product, ...] = CATALOG[:8]

# Warm-up of the leak check: the server's RSS is taken this long after the
# churn starts (bounded by a tenth of the churn), once its allocator has
# grown to the working set, and again at the end.
LEAK_WARMUP = 1.0


def _churn_producer(
    address: Address, authkey: bytes, index: int, ready: Callable[[], None]
) -> dict[str, int]:
    """Publish the kinds round robin, blocking in the market while full, until closed."""
    market = connect(address, authkey)
    producer_id = market.register_producer()
    ready()
    kinds = CHURN_KINDS
    kind = index % len(kinds)
    calls = published = 0
    try:
        while calls % PARENT_CHECK_CALLS or not _parent_gone():
            calls += 1
            if market.publish(producer_id, kinds[kind], CHURN_PUBLISH_WAIT):
                published += 1
                kind = (kind + 1) % len(kinds)
    except MarketClosedError:
        pass
    return {"calls": calls, "published": published}


def _churn_consumer(
    address: Address, authkey: bytes, seed: int, add_wait: float, ready: Callable[[], None]
) -> dict[str, int]:
    """Endless sessions: three adds of 1-5 units, maybe a remove, then an order."""
    market = connect(address, authkey)
    cart = market.new_cart()
    rng = random.Random(seed)
    kinds = CHURN_KINDS
    ready()
    calls = bought = sessions = 0
    try:
        while not _parent_gone():
            held = []
            for _ in range(3):
                quantity = rng.randint(1, 5)
                kind = rng.randrange(len(kinds))
                while True:
                    calls += 1
                    if market.add_many(cart, kinds[kind], quantity, add_wait):
                        break
                    kind = (kind + rng.randrange(1, len(kinds))) % len(kinds)  # another kind
                held.append(kinds[kind])
            if rng.random() < 1 / 3:
                calls += 1
                market.remove_many(cart, rng.choice(held), 1)
            calls += 1
            bought += len(market.place_order(cart))
            sessions += 1
    except MarketClosedError:
        pass
    return {"calls": calls, "bought": bought, "sessions": sessions}


def _churn_round(
    producers: int,
    consumers: int,
    duration: float,
    ctx: BaseContext,
    *,
    seed: int = 0,
    add_wait: float = CHURN_ADD_WAIT,
    watch_server: bool = False,
) -> ChurnRound:
    """One churn of ``duration`` seconds on a fresh market server.

    With ``watch_server``, the server's RSS is taken after the warm-up and at
    the end, before the market closes.
    """
    with _BenchServer(ctx) as server, _Fleet(ctx, on_stop=server.close) as fleet:
        for index in range(producers):
            fleet.spawn(
                f"churn-prod{index + 1}", _churn_producer, server.address, server.authkey, index
            )
        for index in range(consumers):
            fleet.spawn(
                f"churn-cons{index + 1}",
                _churn_consumer,
                server.address,
                server.authkey,
                seed * 1_000_003 + index,
                add_wait,
            )
        fleet.wait_ready()
        watched = _server_processes() if watch_server else []
        rss_start = rss_end = None
        started = fleet.release()
        if watched:
            warmup = min(LEAK_WARMUP, duration / 10)
            time.sleep(warmup)
            rss_start = _rss(watched[0])
            time.sleep(max(0.0, started + duration - time.perf_counter()))
            rss_end = _rss(watched[0])
        else:
            time.sleep(duration)
        ended = time.perf_counter()
        server.close()
        results = fleet.results(RESULT_GRACE)
        books = server.market.books()
    producer_results, consumer_results = results[:producers], results[producers:]
    return ChurnRound(
        seconds=ended - started,
        calls=sum(r["calls"] for r in results),
        bought=sum(r["bought"] for r in consumer_results),
        published=sum(r["published"] for r in producer_results),
        books=books,
        server_rss=(rss_start, rss_end),
    )


# What ``run_churn`` measures: mpmarket's own churn ("own", its native API) and
# the course-API churn on mpmarket ("course-api"); the course-API churn on the
# classic design, as processes on its stock server, is measured in every round
# with either, as the reference of the ``_vs_classic`` ratios.
CHURN_MODES = ("own", "course-api")


def _size_name(producers: int, consumers: int) -> str:
    return f"{producers}x{consumers}"


def run_churn(
    sizes: Sequence[tuple[int, int]] = ((1, 1), (4, 8), (16, 32)),
    *,
    duration: float = 10.0,
    repeat: int = 3,
    floor_clients: int = 8,
    floor_calls: int = 5000,
    seed: int = 0,
    add_wait: float = CHURN_ADD_WAIT,
    api_wait: float = API_WAIT,
    modes: Sequence[str] = CHURN_MODES,
    start_method: str | None = None,
    progress: Progress = _quiet,
) -> BenchResult:
    """Products bought per second under full load, per size, against the floor and the classic.

    Cases per size, in this order: ``"PxC"`` (the own churn, if measured),
    ``"PxC course-api"`` (mpmarket, if measured) and ``"PxC course-api
    classic"`` (the classic processes). mpmarket's cases gain
    ``bought_vs_classic``: their bought/s over the classic case's of the same
    round.
    """
    for mode in modes:
        if mode not in CHURN_MODES:
            raise ValueError(f"churn modes are {', '.join(CHURN_MODES)}, got {mode!r}")
    ctx = process_context(start_method)
    names = {
        "own": "{}",
        "course-api": "{} course-api",
        "classic": "{} course-api classic",
    }
    kinds = [mode for mode in CHURN_MODES if mode in modes] + ["classic"]
    floors: list[dict[str, float | None]] = []
    rounds: dict[str, list[dict[str, float | None]]] = {}
    checks: dict[str, dict[str, bool]] = {}
    for number in range(repeat):
        progress(f"churn: floor of {_floor_name(floor_clients)}, round {number + 1} of {repeat}")
        floor = _floor_round(floor_clients, floor_calls, ctx)
        floors.append(floor)
        for producers, consumers in sizes:
            size = _size_name(producers, consumers)
            measured: dict[str, ChurnRound] = {}
            for kind in reversed(kinds):  # the classic first: the others' reference
                name = names[kind].format(size)
                progress(f"churn {name}: round {number + 1} of {repeat}")
                if kind == "own":
                    churn = _churn_round(
                        producers, consumers, duration, ctx, seed=seed + number, add_wait=add_wait
                    )
                else:
                    design = CLASSIC_PROCESSES if kind == "classic" else MPMARKET
                    churn = api_churn_round(
                        design,
                        producers,
                        consumers,
                        duration,
                        ctx,
                        seed=seed + number,
                        wait=api_wait,
                    )
                measured[kind] = churn
                case_checks = checks.setdefault(name, {})
                for check, ok in churn.checks().items():
                    case_checks[check] = case_checks.get(check, True) and ok
            classic = measured["classic"].bought_per_s
            for kind, churn in measured.items():
                figures = churn.figures(floor["calls_per_s"])
                if kind != "classic":
                    figures["bought_vs_classic"] = _ratio(churn.bought_per_s, classic)
                rounds.setdefault(names[kind].format(size), []).append(figures)
    params = {
        "sizes": [_size_name(p, c) for p, c in sizes],
        "modes": [kind for kind in kinds if kind != "classic"],
        "duration_s": duration,
        "floor_clients": floor_clients,
        "floor_calls": floor_calls,
        "seed": seed,
        "queue_size": DEFAULT_QUEUE_SIZE,
        "add_wait_s": add_wait,
        "publish_wait_s": CHURN_PUBLISH_WAIT,
        "api_wait_s": api_wait,
    }
    cases = [
        Case.of(name, rounds[name], checks[name])
        for name in (names[kind].format(_size_name(p, c)) for p, c in sizes for kind in kinds)
    ]
    return BenchResult(
        "churn", repeat, params, cases, floor=Case.of(_floor_name(floor_clients), floors, {})
    )
