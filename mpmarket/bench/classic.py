"""The designs a benchmark compares, and one run of a workload on each.

mpmarket is measured against the course's own design (``mpmarket.core.classic``)
in the same round, hosted two ways:

- **classic processes**: a process per agent on a stock BaseManager server (a
  thread per connection), each agent sleeping its waits client-side
  (``mpmarket.net.classic``; ``LocalRun(market="classic")`` for workloads);
- **classic threads**: the course's own shape, a thread per agent over one
  ``ClassicMarket`` in this process (``run_classic_threads``).

``DESIGNS`` names what ``run_design`` runs: mpmarket (one process per agent),
mpmarket with agents packed by ``PACKED_AGENTS`` a process, and the two classic
ones. ``design_figures`` gives each run's figures; ``BenchServer`` and
``open_market`` give the churn and latency benchmarks a server and a client of
either market with one interface.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.context import BaseContext
from typing import Any

from mpmarket.bench.results import _ratio
from mpmarket.bench.workers import _BenchServer
from mpmarket.core.agents import consume, produce
from mpmarket.core.classic import ClassicAgent, ClassicMarket
from mpmarket.core.workload import (
    Workload,
    expected_purchases,
    purchase_line,
)
from mpmarket.errors import MarketClosedError
from mpmarket.net.classic import connect_classic
from mpmarket.net.client import ATTACH_TIMEOUT, connect
from mpmarket.net.wire import Address
from mpmarket.products import Product
from mpmarket.run.local import LocalRun

__all__ = [
    "CLASSIC_PROCESSES",
    "CLASSIC_THREADS",
    "DESIGNS",
    "MPMARKET",
    "MPMARKET_PACKED",
    "PACKED_AGENTS",
    "THREADS_JOIN",
    "BenchServer",
    "ThreadRun",
    "design_figures",
    "open_market",
    "run_classic_threads",
    "run_design",
]

MPMARKET = "mpmarket"
MPMARKET_PACKED = "mpmarket packed"
CLASSIC_PROCESSES = "classic processes"
CLASSIC_THREADS = "classic threads"
DESIGNS = (MPMARKET, MPMARKET_PACKED, CLASSIC_PROCESSES, CLASSIC_THREADS)

# Agents a process in the "mpmarket packed" design (--agents-per-process).
PACKED_AGENTS = 8

# How long the classic threads get to start, to end once closed: generous,
# a bound for a broken run, not a measure.
THREADS_JOIN = 60.0


class BenchServer(_BenchServer):
    """A server of ``design`` (mpmarket's, or the classic one on a stock server) for one round."""

    def __init__(self, design: str, ctx: BaseContext) -> None:
        super().__init__(ctx, classic=design == CLASSIC_PROCESSES)
        self.design = design


def open_market(design: str, address: Address, authkey: bytes, *, retry_wait: float = 0.0) -> Any:
    """A benchmark process's market: mpmarket's proxy, or a ``ClassicAgent`` over a stock proxy.

    Both have ``register_producer``, ``publish``, ``new_cart``, ``add_many``,
    ``remove_many`` and ``place_order``; the classic one sleeps ``retry_wait``
    between refused tries, client-side. ``add_to_cart`` and the classic
    one-try calls are on ``.market`` of the agent.
    """
    if design == CLASSIC_PROCESSES:
        proxy = connect_classic(address, authkey, timeout=ATTACH_TIMEOUT)
        return ClassicAgent(proxy, retry_wait=retry_wait, republish_wait=retry_wait)
    return connect(address, authkey)


@dataclass
class ThreadRun:
    """One run of a workload as classic threads: timings as a ``RunReport`` has them."""

    startup_s: float = 0.0
    market_s: float = 0.0
    shutdown_s: float = 0.0
    wall_s: float = 0.0
    orders: list[tuple[str, list[Product]]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def products_bought(self) -> int:
        return sum(len(products) for _, products in self.orders)


def run_classic_threads(workload: Workload) -> ThreadRun:
    """The course's own shape: a ``ClassicAgent`` thread per agent over one ``ClassicMarket``.

    Start-up runs until every thread has registered (or has its cart) and
    waits at the barrier; the market from its release until the last
    consumer is done; then the market closes (sleeping producers end at their
    next try) and every thread is joined.
    """
    started = time.perf_counter()
    result = ThreadRun()
    market = ClassicMarket(workload.queue_size_per_producer)
    stop = threading.Event()
    barrier = threading.Barrier(len(workload.producers) + len(workload.consumers) + 1)
    lock = threading.Lock()

    def ready(_ident: int) -> None:
        barrier.wait(THREADS_JOIN)

    def deliver(name: str, products: list[Product]) -> None:
        with lock:
            result.orders.append((name, products))

    def guarded(body: Callable[[], object]) -> None:
        try:
            with contextlib.suppress(MarketClosedError):  # how a producer ends
                body()
        except Exception as error:  # reported as the run's failure
            barrier.abort()
            with lock:
                result.errors.append(f"{type(error).__name__}: {error}")

    def producer(spec: Any) -> None:
        produce(ClassicAgent.for_spec(market, spec), spec, stop, ready, keep_schedule=False)

    def consumer(spec: Any) -> None:
        consume(ClassicAgent.for_spec(market, spec), spec, deliver, stop, ready)

    makers = [
        threading.Thread(target=guarded, args=(lambda s=s: producer(s),), name=s.name, daemon=True)
        for s in workload.producers
    ]
    buyers = [
        threading.Thread(target=guarded, args=(lambda s=s: consumer(s),), name=s.name, daemon=True)
        for s in workload.consumers
    ]
    for thread in [*makers, *buyers]:
        thread.start()
    try:
        barrier.wait(THREADS_JOIN)
    except threading.BrokenBarrierError:
        result.errors.append("the classic threads did not all start")
    released = time.perf_counter()
    deadline = time.monotonic() + THREADS_JOIN + workload_bound(workload)
    for thread in buyers:
        thread.join(max(0.0, deadline - time.monotonic()))
    done = time.perf_counter()
    if any(thread.is_alive() for thread in buyers):
        result.errors.append("classic consumers not done within the bound")
    stop.set()
    market.close()
    for thread in makers + buyers:
        thread.join(THREADS_JOIN)
    ended = time.perf_counter()
    if any(thread.is_alive() for thread in makers + buyers):
        result.errors.append("classic threads still running after the run")
    result.startup_s = released - started
    result.market_s = done - released
    result.shutdown_s = ended - done
    result.wall_s = ended - started
    return result


def workload_bound(workload: Workload) -> float:
    """A generous bound of a workload's market time: every wait and make time in turn."""
    made = sum(s.make_time * s.quantity for p in workload.producers for s in p.steps)
    waited = sum(c.retry_wait_time * len(c.sessions) for c in workload.consumers)
    return 10.0 + made + waited


def run_design(
    design: str, workload: Workload, *, start_method: str | None = None, agents_per_process: int = 1
) -> tuple[dict[str, float | None], bool, bool]:
    """One run of ``workload`` on ``design``: its figures, whether it ran ok, and bought right.

    ``agents_per_process`` applies to mpmarket's plain design (the packed one
    packs by ``PACKED_AGENTS``).
    """
    if design == CLASSIC_THREADS:
        run: ThreadRun | Any = run_classic_threads(workload)
    else:
        run = LocalRun(
            workload,
            start_method=start_method,
            started_at=time.perf_counter(),
            agents_per_process=PACKED_AGENTS if design == MPMARKET_PACKED else agents_per_process,
            market="classic" if design == CLASSIC_PROCESSES else "mpmarket",
        ).run()
    bought = Counter(purchase_line(c, p) for c, products in run.orders for p in products)
    return design_figures(workload, run), run.ok, bought == expected_purchases(workload)


def design_figures(workload: Workload, run: Any) -> dict[str, float | None]:
    """The figures of one run (a ``RunReport`` or a ``ThreadRun``)."""
    return {
        "agents": len(workload.producers) + len(workload.consumers),
        "bought": run.products_bought,
        "wall_s": run.wall_s,
        "startup_s": run.startup_s,
        "market_s": run.market_s,
        "shutdown_s": run.shutdown_s,
    }


def versus(
    figures: dict[str, float | None], reference: dict[str, float | None] | None, name: str
) -> dict[str, float | None]:
    """``wall_vs_<name>`` and ``market_vs_<name>``: ``figures`` over ``reference`` of its round."""
    reference = reference or {}
    return {
        f"wall_vs_{name}": _ratio(figures.get("wall_s"), reference.get("wall_s")),
        f"market_vs_{name}": _ratio(figures.get("market_s"), reference.get("market_s")),
    }
