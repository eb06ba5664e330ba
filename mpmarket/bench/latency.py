"""``run_latency``: publish-to-obtained latency to waiting consumers.

One producer publishes every millisecond to consumers already waiting in
``add_many``: publish-to-obtained percentiles against the 1-client round
trip (``_latency_round`` says how the units are paired) and against the
wake floor of the same round (``mpmarket.bench.wake``: one message to a
process blocked idle in ``recv``) plus that round trip. The same on the
classic design as processes, whose consumers try, sleep
``classic_retry_wait`` and try again.

Figures: ``samples``, ``late`` (samples whose consumer asked only after the
publish had started, so it was not waiting), ``p50_us``, ``p90_us``,
``p99_us``, ``rt_us`` (the 1-client floor of the same round),
``p50_vs_rt``, ``p99_vs_rt``; mpmarket's cases also ``wake_p50_us``,
``wake_p99_us`` (the wake floor with as many idle receivers as consumers),
``p50_vs_wake_rt`` (p50 over wake p50 + rt), ``p99_vs_wake_rt``,
``p50_vs_classic`` and ``p99_vs_classic`` (over the classic case of the same
round). ``floor`` is the 1-client floor.

Then, in every round, timed-out waits of 1 and 5 ms against ``time.sleep``
(``mpmarket.bench.waits``): cases ``"timed-out wait, 1 ms"`` and ``"..., 5 ms"``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from multiprocessing.context import BaseContext

from mpmarket.bench.churn import CHURN_PUBLISH_WAIT
from mpmarket.bench.classic import CLASSIC_PROCESSES, MPMARKET, BenchServer, open_market
from mpmarket.bench.floor import _floor_round
from mpmarket.bench.results import BenchResult, Case, Progress, _quiet, _ratio, percentile
from mpmarket.bench.waits import WAITS_SAMPLES, WAITS_TIMEOUTS, waits_name, waits_round
from mpmarket.bench.wake import wake_round
from mpmarket.bench.workers import RESULT_GRACE, _Fleet
from mpmarket.errors import RunError
from mpmarket.net.wire import Address
from mpmarket.proc.context import process_context
from mpmarket.products import Product

__all__ = [
    "CLASSIC_RETRY_WAIT",
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

# How long a consumer of the classic design sleeps between two tries: the
# course-API churn's 1 ms.
CLASSIC_RETRY_WAIT = 0.001


def _unit(seq: int) -> Product:
    return Product(name=f"unit-{seq}", price=0)


def _latency_producer(
    design: str,
    address: Address,
    authkey: bytes,
    total: int,
    period: float,
    ready: Callable[[], None],
) -> list[int]:
    """Publish ``unit-0`` .. ``unit-{total-1}``, one every ``period``; return the publish times."""
    market = open_market(design, address, authkey)
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
    design: str,
    address: Address,
    authkey: bytes,
    index: int,
    consumers: int,
    total: int,
    retry_wait: float,
    ready: Callable[[], None],
) -> list[tuple[int, int, int]]:
    """Wait for ``unit-{index}``, ``unit-{index + consumers}``... in turn.

    Returns ``(seq, asked_ns, obtained_ns)`` per unit: when the blocking
    ``add_many`` was called and when it returned. On the classic design the
    add tries, sleeps ``retry_wait`` and tries again, client-side.
    """
    market = open_market(design, address, authkey, retry_wait=retry_wait)
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
    consumers: int,
    samples: int,
    period: float,
    ctx: BaseContext,
    design: str = MPMARKET,
    retry_wait: float = CLASSIC_RETRY_WAIT,
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
    warmup = _warmup(consumers)
    total = warmup + samples
    with BenchServer(design, ctx) as server, _Fleet(ctx, on_stop=server.close) as fleet:
        fleet.spawn(
            "latency-producer",
            _latency_producer,
            design,
            server.address,
            server.authkey,
            total,
            period,
        )
        for index in range(consumers):
            fleet.spawn(
                f"latency-consumer-{index + 1}",
                _latency_consumer,
                design,
                server.address,
                server.authkey,
                index,
                consumers,
                total,
                retry_wait,
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


def _warmup(consumers: int) -> int:
    return max(LATENCY_MIN_WARMUP, LATENCY_WARMUP_PER_CONSUMER * consumers)


def _consumers_name(consumers: int) -> str:
    return f"{consumers} consumer" + ("" if consumers == 1 else "s")


def _percentiles(latencies: list[float], prefix: str = "") -> dict[str, float | None]:
    return {f"{prefix}p{p}_us": percentile(latencies, p) for p in (50, 90, 99)}


def run_latency(
    consumers: Sequence[int] = (1, 16),
    *,
    samples: int = 2000,
    period: float = 0.001,
    floor_calls: int = 5000,
    classic_retry_wait: float = CLASSIC_RETRY_WAIT,
    repeat: int = 3,
    start_method: str | None = None,
    progress: Progress = _quiet,
) -> BenchResult:
    """Publish-to-obtained latency to waiting consumers, against the floors and the classic.

    Per consumer count, in every round: the wake floor, mpmarket, and the
    classic design as processes (case ``"N consumers, classic"``).
    """
    ctx = process_context(start_method)
    floors: list[dict[str, float | None]] = []
    rounds: dict[str, list[dict[str, float | None]]] = {}
    for number in range(repeat):
        progress(f"latency: floor of 1 client, round {number + 1} of {repeat}")
        floor = _floor_round(1, floor_calls, ctx)
        floors.append(floor)
        rt = floor["rt_us"]
        for n in consumers:
            name = _consumers_name(n)
            progress(f"latency {name}: wake floor, round {number + 1} of {repeat}")
            wake = _percentiles(wake_round(n, _warmup(n) + samples, _warmup(n), period, ctx))
            measured = {}
            for design in (MPMARKET, CLASSIC_PROCESSES):
                label = name if design == MPMARKET else f"{name}, classic"
                progress(f"latency {label}: round {number + 1} of {repeat}")
                latencies, late = _latency_round(
                    n, samples, period, ctx, design, classic_retry_wait
                )
                measured[design] = figures = {
                    "samples": len(latencies),
                    "late": late,
                    **_percentiles(latencies),
                    "rt_us": rt,
                }
                figures["p50_vs_rt"] = _ratio(figures["p50_us"], rt)
                figures["p99_vs_rt"] = _ratio(figures["p99_us"], rt)
                rounds.setdefault(label, []).append(figures)
            ours, classic = measured[MPMARKET], measured[CLASSIC_PROCESSES]
            ours["wake_p50_us"] = wake["p50_us"]
            ours["wake_p99_us"] = wake["p99_us"]
            ours["p50_vs_wake_rt"] = _ratio(ours["p50_us"], _sum(wake["p50_us"], rt))
            ours["p99_vs_wake_rt"] = _ratio(ours["p99_us"], _sum(wake["p99_us"], rt))
            ours["p50_vs_classic"] = _ratio(ours["p50_us"], classic["p50_us"])
            ours["p99_vs_classic"] = _ratio(ours["p99_us"], classic["p99_us"])
        progress(f"latency: timed-out waits, round {number + 1} of {repeat}")
        waits = waits_round(WAITS_TIMEOUTS, min(samples, WAITS_SAMPLES), ctx)
        for timeout, figures in waits.items():
            rounds.setdefault(waits_name(timeout), []).append(figures)
    params = {
        "consumers": list(consumers),
        "samples": samples,
        "period_ms": period * 1000,
        "floor_calls": floor_calls,
        "classic_retry_wait_ms": classic_retry_wait * 1000,
        "wait_timeouts_ms": [timeout * 1000 for timeout in WAITS_TIMEOUTS],
        "wait_samples": min(samples, WAITS_SAMPLES),
    }
    names = [
        label for n in consumers for label in (_consumers_name(n), f"{_consumers_name(n)}, classic")
    ]
    cases = [Case.of(label, rounds[label], {}) for label in names]
    for timeout in WAITS_TIMEOUTS:  # every call timed out, as on an empty market it must
        waited = rounds[waits_name(timeout)]
        done = all(figures["timed_out"] == figures["samples"] for figures in waited)
        cases.append(Case.of(waits_name(timeout), waited, {"timed out": done}))
    return BenchResult("latency", repeat, params, cases, floor=Case.of("1 client", floors, {}))


def _sum(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a + b
