"""``run_latency``: publish-to-obtained latency to waiting consumers.

One producer publishes every millisecond to consumers already waiting in
``add_many``: publish-to-obtained percentiles against the 1-client round
trip (``_latency_round`` says how the units are paired).

Figures: ``samples``, ``late`` (samples whose consumer asked only after the
publish had started, so it was not waiting), ``p50_us``, ``p90_us``,
``p99_us``, ``rt_us`` (the 1-client floor of the same round),
``p50_vs_rt``, ``p99_vs_rt``; ``floor`` is the 1-client floor.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from multiprocessing.context import BaseContext

from mpmarket.bench.churn import CHURN_PUBLISH_WAIT
from mpmarket.bench.floor import _floor_round
from mpmarket.bench.results import BenchResult, Case, Progress, _quiet, _ratio, percentile
from mpmarket.bench.workers import RESULT_GRACE, _BenchServer, _Fleet
from mpmarket.errors import RunError
from mpmarket.net.client import connect
from mpmarket.net.wire import Address
from mpmarket.proc.context import process_context
from mpmarket.products import Product

__all__ = [
    "LATENCY_LEAD",
    "LATENCY_MIN_WARMUP",
    "LATENCY_ORDER_EVERY",
    "LATENCY_WAIT",
    "LATENCY_WARMUP_PER_CONSUMER",
    "run_latency",
]

# How long after the start the first publish happens (so that every consumer
# is already waiting), units published before the measured ones (at least
# this many per consumer), and how long a consumer waits for its next unit
# before calling the run broken.
LATENCY_LEAD = 0.05
LATENCY_WARMUP_PER_CONSUMER = 2
LATENCY_MIN_WARMUP = 20
LATENCY_WAIT = 5.0

# A latency consumer empties its cart after this many units, to keep it small.
LATENCY_ORDER_EVERY = 50


def _unit(seq: int) -> Product:
    return Product(name=f"unit-{seq}", price=0)


def _latency_producer(
    address: Address, authkey: bytes, total: int, period: float, ready: Callable[[], None]
) -> list[int]:
    """Publish ``unit-0`` .. ``unit-{total-1}``, one every ``period``; return the publish times."""
    market = connect(address, authkey)
    producer_id = market.register_producer()
    ready()
    published = []
    first = time.perf_counter() + LATENCY_LEAD
    for seq in range(total):
        delay = first + seq * period - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        unit = _unit(seq)
        published.append(time.perf_counter_ns())
        if not market.publish(producer_id, unit, CHURN_PUBLISH_WAIT):
            raise RunError(f"the market refused unit-{seq}")
    return published


def _latency_consumer(
    address: Address,
    authkey: bytes,
    index: int,
    consumers: int,
    total: int,
    ready: Callable[[], None],
) -> list[tuple[int, int, int]]:
    """Wait for ``unit-{index}``, ``unit-{index + consumers}``... in turn.

    Returns ``(seq, asked_ns, obtained_ns)`` per unit: when the blocking
    ``add_many`` was called and when it returned.
    """
    market = connect(address, authkey)
    cart = market.new_cart()
    ready()
    obtained = []
    for seq in range(index, total, consumers):
        asked = time.perf_counter_ns()
        got = market.add_many(cart, _unit(seq), 1, LATENCY_WAIT)
        now = time.perf_counter_ns()
        if got != 1:
            raise RunError(f"unit-{seq} did not come within {LATENCY_WAIT:.0f} s")
        obtained.append((seq, asked, now))
        if len(obtained) % LATENCY_ORDER_EVERY == 0:
            market.place_order(cart)
    return obtained


def _latency_round(
    consumers: int, samples: int, period: float, ctx: BaseContext
) -> tuple[list[float], int]:
    """Publish-to-obtained latencies (us) of the measured units, and how many were late.

    Pairing: unit ``seq`` is ``Product("unit-{seq}", 0)``, a kind of its own,
    and exactly one consumer (``seq % consumers``) waits for it, asking for
    its next unit the moment it has the last one. So every publish is handed
    to one known waiter, and ``obtained[seq] - published[seq]`` pairs two
    times of the same unit without assuming any order between processes.
    With 16 consumers the market holds 16 waiters at once, and each publish
    wakes exactly the one it is for. A unit counts as late when its consumer
    asked only after the publish started (it was not waiting): it still
    counts, and ``late`` says how often it happened.
    """
    warmup = max(LATENCY_MIN_WARMUP, LATENCY_WARMUP_PER_CONSUMER * consumers)
    total = warmup + samples
    with _BenchServer(ctx) as server, _Fleet(ctx, on_stop=server.close) as fleet:
        fleet.spawn(
            "latency-producer", _latency_producer, server.address, server.authkey, total, period
        )
        for index in range(consumers):
            fleet.spawn(
                f"latency-consumer-{index + 1}",
                _latency_consumer,
                server.address,
                server.authkey,
                index,
                consumers,
                total,
            )
        fleet.wait_ready()
        fleet.release()
        results = fleet.results(RESULT_GRACE + LATENCY_LEAD + total * period)
    published: list[int] = results[0]
    latencies = []
    late = 0
    for consumer in results[1:]:
        for seq, asked, obtained in consumer:
            if seq < warmup:
                continue
            latencies.append((obtained - published[seq]) / 1000)
            late += asked > published[seq]
    return latencies, late


def _consumers_name(consumers: int) -> str:
    return f"{consumers} consumer" + ("" if consumers == 1 else "s")


def run_latency(
    consumers: Sequence[int] = (1, 16),
    *,
    samples: int = 2000,
    period: float = 0.001,
    floor_calls: int = 5000,
    repeat: int = 3,
    start_method: str | None = None,
    progress: Progress = _quiet,
) -> BenchResult:
    """Publish-to-obtained latency to waiting consumers, against the 1-client round trip."""
    ctx = process_context(start_method)
    floors: list[dict[str, float | None]] = []
    rounds: dict[int, list[dict[str, float | None]]] = {n: [] for n in consumers}
    for number in range(repeat):
        progress(f"latency: floor of 1 client, round {number + 1} of {repeat}")
        floor = _floor_round(1, floor_calls, ctx)
        floors.append(floor)
        rt = floor["rt_us"]
        for n in consumers:
            progress(f"latency {_consumers_name(n)}: round {number + 1} of {repeat}")
            latencies, late = _latency_round(n, samples, period, ctx)
            p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
            rounds[n].append(
                {
                    "samples": len(latencies),
                    "late": late,
                    "p50_us": p50,
                    "p90_us": percentile(latencies, 90),
                    "p99_us": p99,
                    "rt_us": rt,
                    "p50_vs_rt": _ratio(p50, rt),
                    "p99_vs_rt": _ratio(p99, rt),
                }
            )
    params = {
        "consumers": list(consumers),
        "samples": samples,
        "period_ms": period * 1000,
        "floor_calls": floor_calls,
    }
    cases = [Case.of(_consumers_name(n), rounds[n], {}) for n in consumers]
    return BenchResult("latency", repeat, params, cases, floor=Case.of("1 client", floors, {}))
