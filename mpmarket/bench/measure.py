"""Benchmarks: what a proxy call costs here, and how close the market gets to it.

Five benchmarks, each a function returning a ``BenchResult`` (no printing;
``cli_bench`` renders and writes it):

- ``run_floor``: a no-op BaseManager method call, from 1 and from 8 client
  processes: calls/s in all and the mean round trip. The floor every ratio is
  measured against; each benchmark that quotes a ratio measures its own floor
  in the same invocation.
- ``run_churn``: producers publish as fast as the market lets them, consumers
  run endless three-add sessions, for ``duration`` seconds per size: products
  bought/s, market calls/s, round trips per product, bought/s per floor call/s.
- ``run_latency``: one producer publishes every millisecond to consumers
  already waiting in ``add_many``: publish-to-obtained percentiles against the
  1-client round trip.
- ``run_scale``: a generated run of many agents through ``LocalRun``: start-up
  time, RSS and PSS of the server and of each agent, and the server's RSS
  growth over a long churn (a leak check).
- ``run_course``: every ``*.in`` of a folder through ``LocalRun``, against the
  simulated ideal of ``mpmarket.core.simulate`` when that module is there.

Every figure is measured ``repeat`` times, in rounds: each round measures the
floor (where one is needed) and then every case, so a ratio pairs a case with
the floor of its own round. A figure is reported as the median, min and max
over the rounds.

JSON (``BenchResult.to_json``), version 1::

    {
      "benchmark": "floor" | "churn" | "latency" | "scale" | "course",
      "version": 1,
      "machine": {"cpu_count": int, "python": str, "platform": str},
      "repeat": int,                       # rounds measured
      "params": {str: value},              # the settings of this invocation
      "floor": CASE | null,                # the reference of the ratios, if any
      "cases": [CASE, ...]
    }

    CASE = {
      "case": str,                         # "1 client", "16x32", "01", "total"...
      "figures": {str: STAT | null},       # null: not measurable (see below)
      "checks": {str: bool}                # consistency checks of the runs
    }
    STAT = {"median": number, "min": number, "max": number}

Figures by benchmark (the name carries the unit):

- floor: ``calls_per_s`` (all clients together), ``rt_us`` (mean round trip
  of one call as a client sees it).
- churn: ``bought``, ``calls``, ``published`` (counts in the window),
  ``bought_per_s``, ``calls_per_s``, ``rt_per_product`` (market calls of
  producers and consumers per product bought), ``bought_vs_floor`` (bought/s
  divided by the 8-client floor's calls/s); checks ``bought_matches_books``,
  ``published_matches_books``, ``balanced``. ``floor`` is the 8-client floor.
- latency: ``samples``, ``late`` (samples whose consumer asked only after the
  publish had started, so it was not waiting), ``p50_us``, ``p90_us``,
  ``p99_us``, ``rt_us`` (the 1-client floor of the same round),
  ``p50_vs_rt``, ``p99_vs_rt``; ``floor`` is the 1-client floor.
- scale, case "N agents": ``agents``, ``processes`` (agent processes: fewer
  with ``agents_per_process``), ``startup_s``, ``wall_s``, ``server_rss_mb``,
  ``agent_rss_mb`` and ``agent_pss_mb`` (per agent: the agent processes'
  sum over their agents), ``process_pss_max_mb`` (the largest agent
  process), ``processes_sampled`` (those still there to be read when all
  were released); PSS figures are null where
  ``/proc/PID/smaps_rollup`` does not exist. Case "churn PxC": ``seconds``,
  ``bought_per_s``, ``server_rss_start_mb``, ``server_rss_end_mb``,
  ``server_rss_growth_mb``. Checks ``ok`` and ``bought_all`` (the run bought
  what its workload says).
- course, one case per file and a "total": ``agents``, ``bought``,
  ``wall_s``, ``startup_s``, ``market_s``, ``ideal_s``, ``market_vs_ideal``,
  ``wall_vs_ideal``; the ideal figures are null when the simulator is missing
  or finds no makespan. Checks ``ok``, ``correct`` (the lines bought equal
  the workload's expected purchases) and ``deadlock_free`` (false when the
  simulator finds that the workload deadlocks: such a case is not run, as
  its run would never end, and its figures are null).

Clocks: ``time.perf_counter`` is CLOCK_MONOTONIC on Linux, one clock for the
whole system, so times taken in different processes compare directly.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import platform
import random
import signal
import statistics
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing import connection, managers
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import psutil

from mpmarket.core.books import MarketBooks
from mpmarket.core.workload import (
    CATALOG,
    DEFAULT_QUEUE_SIZE,
    Workload,
    expected_purchases,
    generate,
    load_course_json,
    purchase_line,
)
from mpmarket.errors import (
    MarketClosedError,
    MarketUnavailableError,
    MpmarketError,
    RunError,
    WorkloadError,
)
from mpmarket.net.client import ATTACH_TIMEOUT, connect
from mpmarket.net.server import MarketManager, new_authkey, start_server
from mpmarket.net.wire import Address
from mpmarket.proc.context import process_context
from mpmarket.proc.lifeline import (
    PARENT_CHECK_INTERVAL,
    STOP_GRACE,
    TERMINATE_GRACE,
    stop_processes,
)
from mpmarket.products import Product
from mpmarket.run.local import LocalRun
from mpmarket.run.report import RunObserver, RunReport

__all__ = [
    "BENCH_VERSION",
    "BenchResult",
    "Case",
    "Stat",
    "machine_info",
    "parse_sizes",
    "percentile",
    "run_churn",
    "run_course",
    "run_floor",
    "run_latency",
    "run_scale",
]

BENCH_VERSION = 1

Progress = Callable[[str], None]

# -- tunables ----------------------------------------------------------------

# No-op calls each floor client makes before the measured ones: the first
# call connects, the next few warm the server thread and the caches.
FLOOR_WARMUP_CALLS = 20

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

# Latency: how long after the start the first publish happens (so that every
# consumer is already waiting), units published before the measured ones
# (at least this many per consumer), and how long a consumer waits for its
# next unit before calling the run broken.
LATENCY_LEAD = 0.05
LATENCY_WARMUP_PER_CONSUMER = 2
LATENCY_MIN_WARMUP = 20
LATENCY_WAIT = 5.0

# A latency consumer empties its cart after this many units, to keep it small.
LATENCY_ORDER_EVERY = 50

# Bounds of the benchmark processes: attach and reach the start barrier,
# answer after the work is done, and the escalating stop.
READY_TIMEOUT = ATTACH_TIMEOUT + 5.0
RESULT_GRACE = 30.0
# Producers check every this many calls that their parent still lives.
PARENT_CHECK_CALLS = 64

MB = 1024 * 1024


# -- results -------------------------------------------------------------------


@dataclass(frozen=True)
class Stat:
    """One figure over the rounds."""

    median: float
    min: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float | None]) -> Stat | None:
        """The median, min and max of the values measured; None if none was."""
        measured = [v for v in values if v is not None]
        if not measured:
            return None
        return cls(statistics.median(measured), min(measured), max(measured))


@dataclass
class Case:
    """One row of a benchmark: its figures over the rounds and its checks."""

    name: str
    figures: dict[str, Stat | None] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)

    @classmethod
    def of(
        cls, name: str, rounds: Sequence[dict[str, float | None]], checks: dict[str, bool]
    ) -> Case:
        """Summarize per-round figure dicts (same keys, first round's order)."""
        names = list(rounds[0]) if rounds else []
        figures = {n: Stat.of([r.get(n) for r in rounds]) for n in names}
        return cls(name, figures, checks)

    def median(self, figure: str) -> float | None:
        stat = self.figures.get(figure)
        return None if stat is None else stat.median

    def to_json(self) -> dict[str, Any]:
        return {
            "case": self.name,
            "figures": {
                name: None
                if stat is None
                else {"median": stat.median, "min": stat.min, "max": stat.max}
                for name, stat in self.figures.items()
            },
            "checks": dict(self.checks),
        }


def machine_info() -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count() or 1,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


@dataclass
class BenchResult:
    """What one benchmark invocation measured; ``to_json`` is the file format."""

    benchmark: str
    repeat: int
    params: dict[str, Any]
    cases: list[Case]
    floor: Case | None = None
    machine: dict[str, Any] = field(default_factory=machine_info)

    @property
    def failed_checks(self) -> list[str]:
        """``"case: check"`` for every check that did not hold."""
        cases = ([self.floor] if self.floor else []) + self.cases
        return [f"{c.name}: {name}" for c in cases for name, ok in c.checks.items() if not ok]

    def to_json(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            "version": BENCH_VERSION,
            "machine": dict(self.machine),
            "repeat": self.repeat,
            "params": dict(self.params),
            "floor": None if self.floor is None else self.floor.to_json(),
            "cases": [case.to_json() for case in self.cases],
        }


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0-100), interpolating linearly between ranks."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """``"1x1,4x8"`` to ``[(1, 1), (4, 8)]`` (producers x consumers); ValueError if bad."""
    sizes = []
    for part in text.split(","):
        producers, sep, consumers = part.strip().lower().partition("x")
        if not sep or not producers.isdigit() or not consumers.isdigit():
            raise ValueError(f"expected PRODUCERSxCONSUMERS such as 4x8, got {part.strip()!r}")
        if int(producers) < 1 or int(consumers) < 1:
            raise ValueError(f"need at least one producer and one consumer, got {part.strip()!r}")
        sizes.append((int(producers), int(consumers)))
    return sizes


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def _quiet(_message: str) -> None:
    return None


# -- benchmark processes ---------------------------------------------------------


def _parent_gone() -> bool:
    """True when the process that started this one has died."""
    parent = multiprocessing.parent_process()
    return parent is not None and not parent.is_alive()


def _worker_main(
    body: Callable[..., Any], args: tuple[Any, ...], channel: connection.Connection, go: Any
) -> None:
    """Entry point of every benchmark process: ``body(*args, ready)``, result to the pipe.

    ``ready()`` tells the parent this process is set up and waits for the start.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C

    def ready() -> None:
        channel.send(("ready",))
        while not go.wait(PARENT_CHECK_INTERVAL):
            if _parent_gone():
                raise SystemExit(1)

    try:
        result = body(*args, ready)
    except MpmarketError as error:
        message = str(error) or type(error).__name__
    except Exception:
        message = traceback.format_exc(limit=3).strip().splitlines()[-1]
    else:
        channel.send(("result", result))
        return
    with contextlib.suppress(OSError):
        channel.send(("failed", message))
    raise SystemExit(1)


@dataclass
class _Worker:
    name: str
    process: BaseProcess
    channel: connection.Connection


class _Fleet:
    """Benchmark processes with a pipe each, one start barrier and a bounded stop.

    Used as a context manager: leaving it calls ``on_stop`` (for instance,
    closing the market so that blocked calls return), then joins every
    process: join, terminate, kill, each step bounded.
    """

    def __init__(self, ctx: BaseContext, on_stop: Callable[[], None] = lambda: None) -> None:
        self._ctx = ctx
        self._go = ctx.Event()
        self._on_stop = on_stop
        self.workers: list[_Worker] = []

    def __enter__(self) -> _Fleet:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def spawn(self, name: str, body: Callable[..., Any], *args: Any) -> None:
        reader, writer = self._ctx.Pipe(duplex=False)
        process = self._ctx.Process(
            target=_worker_main, name=name, args=(body, args, writer, self._go), daemon=True
        )
        try:
            process.start()
        except BaseException:
            reader.close()
            raise
        finally:
            writer.close()
        self.workers.append(_Worker(name, process, reader))

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        self._gather("ready", timeout)

    def release(self) -> float:
        """Let every process go; return the moment (perf_counter) it happened."""
        started = time.perf_counter()
        self._go.set()
        return started

    def results(self, timeout: float) -> list[Any]:
        """Each process's result, in spawn order."""
        return self._gather("result", timeout)

    def _gather(self, tag: str, timeout: float) -> list[Any]:
        deadline = time.monotonic() + timeout
        answers: dict[int, Any] = {}
        pending = {worker.channel: index for index, worker in enumerate(self.workers)}
        while pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RunError(
                    f"{len(pending)} benchmark processes did not answer within {timeout:.0f} s"
                )
            for channel in connection.wait(list(pending), remaining):
                index = pending.pop(channel)  # type: ignore[call-overload]
                worker = self.workers[index]
                try:
                    message = channel.recv()  # type: ignore[union-attr]
                except EOFError:
                    worker.process.join(TERMINATE_GRACE)
                    raise RunError(
                        f"benchmark process {worker.name} died (exit code {worker.process.exitcode})"
                    ) from None
                if message[0] == "failed":
                    raise RunError(f"benchmark process {worker.name} failed: {message[1]}")
                if message[0] != tag:
                    raise RunError(f"benchmark process {worker.name} sent {message[0]!r}")
                answers[index] = message[1] if len(message) > 1 else None
        return [answers[index] for index in range(len(self.workers))]

    def stop(self) -> None:
        with contextlib.suppress(MpmarketError, OSError, EOFError):
            self._on_stop()
        self._go.set()  # processes still at the barrier go on and find the end
        _stop_processes([worker.process for worker in self.workers])
        for worker in self.workers:
            worker.channel.close()


def _stop_processes(processes: Sequence[BaseProcess]) -> None:
    """Join, terminate, then kill whatever is left: every step bounded."""
    stop_processes(processes, STOP_GRACE, TERMINATE_GRACE)


class _MarketServer:
    """A market server for one measurement, with the parent's own proxy.

    Leaving it closes the market, drops the proxy and shuts the server down.
    """

    def __init__(self, ctx: BaseContext, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        self.authkey = new_authkey()
        self.manager = start_server(queue_size, authkey=self.authkey, ctx=ctx)
        self.address: Address = self.manager.address
        try:
            self.market = connect(self.address, self.authkey)
        except BaseException:
            self._shutdown()
            raise

    def __enter__(self) -> _MarketServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
        self.market.disconnect()
        self._shutdown()

    def close(self) -> None:
        """Close the market: blocked calls raise MarketClosedError."""
        with contextlib.suppress(MpmarketError):
            self.market.close()

    def _shutdown(self) -> None:
        with contextlib.suppress(OSError, EOFError, MarketUnavailableError):
            self.manager.shutdown()


def _server_processes() -> list[psutil.Process]:
    """The market server processes started by this process (by their name)."""
    prefix = MarketManager.__name__ + "-"
    found = []
    for child in multiprocessing.active_children():
        if child.name.startswith(prefix) and child.pid is not None:
            with contextlib.suppress(psutil.Error):
                found.append(psutil.Process(child.pid))
    return found


def _rss(process: psutil.Process) -> int | None:
    """RSS in bytes; None once the process has exited (a zombie reads 0)."""
    try:
        return process.memory_info().rss or None
    except psutil.Error:
        return None


def _pss(process: psutil.Process) -> int | None:
    """PSS in bytes where ``/proc/PID/smaps_rollup`` exists (fast), else None.

    None too once the process has exited: a consumer done with its sessions
    is a zombie until the runner reaps it, and reads 0.
    """
    if not os.path.exists(f"/proc/{process.pid}/smaps_rollup"):
        return None
    try:
        return process.memory_full_info().pss or None
    except (psutil.Error, AttributeError):
        return None


# -- floor -----------------------------------------------------------------------

_NOOP_IDENT = "noop"


class _NoOp:
    def noop(self) -> None:
        return None


class _FloorServer(managers.Server):
    """The stock manager server with one no-op object under a known identity.

    The same dispatch path as the market server's: one id_to_obj lookup, one
    exposed check, one method call, one pickled reply.
    """

    def __init__(self, registry: dict, address: Address, authkey: bytes, serializer: str) -> None:
        super().__init__(registry, address, authkey, serializer)
        self.id_to_obj[_NOOP_IDENT] = (_NoOp(), {"noop"}, None)


class _FloorManager(managers.BaseManager):
    _Server = _FloorServer


class _NoOpProxy(managers.BaseProxy):
    _exposed_ = ("noop",)

    def noop(self) -> None:
        return self._callmethod("noop")


def _floor_client(
    address: Address, authkey: bytes, calls: int, ready: Callable[[], None]
) -> tuple[int, float, float]:
    token = managers.Token("NoOp", tuple(address), _NOOP_IDENT)
    proxy = _NoOpProxy(token, "pickle", authkey=authkey, incref=False, manager_owned=True)
    for _ in range(FLOOR_WARMUP_CALLS):
        proxy.noop()  # the first one connects
    ready()
    noop = proxy.noop
    started = time.perf_counter()
    for _ in range(calls):
        noop()
    return calls, started, time.perf_counter()


def _floor_round(clients: int, calls: int, ctx: BaseContext) -> dict[str, float | None]:
    """One floor measurement on a fresh no-op server: calls/s in all, mean round trip."""
    authkey = new_authkey()
    manager = _FloorManager(address=("127.0.0.1", 0), authkey=authkey, ctx=ctx)
    manager.start()
    try:
        with _Fleet(ctx) as fleet:
            for index in range(clients):
                fleet.spawn(
                    f"floor-client-{index + 1}", _floor_client, manager.address, authkey, calls
                )
            fleet.wait_ready()
            fleet.release()
            results = fleet.results(RESULT_GRACE + calls * clients * 0.001)
    finally:
        with contextlib.suppress(OSError, EOFError):
            manager.shutdown()
    total = sum(n for n, _, _ in results)
    window = max(end for _, _, end in results) - min(start for _, start, _ in results)
    round_trips = [(end - start) / n for n, start, end in results if n]
    return {
        "calls_per_s": total / window if window > 0 else None,
        "rt_us": statistics.fmean(round_trips) * 1e6 if round_trips else None,
    }


def _floor_name(clients: int) -> str:
    return f"{clients} client" + ("" if clients == 1 else "s")


def run_floor(
    clients: Sequence[int] = (1, 8),
    *,
    calls: int = 5000,
    repeat: int = 3,
    start_method: str | None = None,
    progress: Progress = _quiet,
) -> BenchResult:
    """The cost of a no-op manager call from ``clients`` processes, ``calls`` each."""
    ctx = process_context(start_method)
    rounds: dict[int, list[dict[str, float | None]]] = {n: [] for n in clients}
    for number in range(repeat):
        for n in clients:
            progress(f"floor {_floor_name(n)}: round {number + 1} of {repeat}")
            rounds[n].append(_floor_round(n, calls, ctx))
    cases = [Case.of(_floor_name(n), rounds[n], {}) for n in clients]
    return BenchResult("floor", repeat, {"clients": list(clients), "calls": calls}, cases)


# -- churn -----------------------------------------------------------------------


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


@dataclass(frozen=True)
class _ChurnRound:
    seconds: float
    calls: int
    bought: int
    published: int
    books: MarketBooks
    server_rss: tuple[int | None, int | None] = (None, None)

    def figures(self, floor_calls_per_s: float | None) -> dict[str, float | None]:
        bought_per_s = self.bought / self.seconds
        return {
            "bought": self.bought,
            "calls": self.calls,
            "published": self.published,
            "bought_per_s": bought_per_s,
            "calls_per_s": self.calls / self.seconds,
            "rt_per_product": _ratio(self.calls, self.bought),
            "bought_vs_floor": _ratio(bought_per_s, floor_calls_per_s),
        }

    def checks(self) -> dict[str, bool]:
        return {
            "bought_matches_books": self.bought == self.books.ordered,
            "published_matches_books": self.published == self.books.published,
            "balanced": self.books.balanced,
        }


def _churn_round(
    producers: int,
    consumers: int,
    duration: float,
    ctx: BaseContext,
    *,
    seed: int = 0,
    add_wait: float = CHURN_ADD_WAIT,
    watch_server: bool = False,
) -> _ChurnRound:
    """One churn of ``duration`` seconds on a fresh market server.

    With ``watch_server``, the server's RSS is taken after the warm-up and at
    the end, before the market closes.
    """
    with _MarketServer(ctx) as server, _Fleet(ctx, on_stop=server.close) as fleet:
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
    return _ChurnRound(
        seconds=ended - started,
        calls=sum(r["calls"] for r in results),
        bought=sum(r["bought"] for r in consumer_results),
        published=sum(r["published"] for r in producer_results),
        books=books,
        server_rss=(rss_start, rss_end),
    )


def run_churn(
    sizes: Sequence[tuple[int, int]] = ((1, 1), (4, 8), (16, 32)),
    *,
    duration: float = 10.0,
    repeat: int = 3,
    floor_clients: int = 8,
    floor_calls: int = 5000,
    seed: int = 0,
    add_wait: float = CHURN_ADD_WAIT,
    start_method: str | None = None,
    progress: Progress = _quiet,
) -> BenchResult:
    """Products bought per second under full load, per size, against the floor."""
    ctx = process_context(start_method)
    floors: list[dict[str, float | None]] = []
    rounds: dict[tuple[int, int], list[dict[str, float | None]]] = {size: [] for size in sizes}
    checks: dict[tuple[int, int], dict[str, bool]] = {size: {} for size in sizes}
    for number in range(repeat):
        progress(f"churn: floor of {_floor_name(floor_clients)}, round {number + 1} of {repeat}")
        floor = _floor_round(floor_clients, floor_calls, ctx)
        floors.append(floor)
        for producers, consumers in sizes:
            progress(f"churn {producers}x{consumers}: round {number + 1} of {repeat}")
            churn = _churn_round(
                producers, consumers, duration, ctx, seed=seed + number, add_wait=add_wait
            )
            rounds[producers, consumers].append(churn.figures(floor["calls_per_s"]))
            for name, ok in churn.checks().items():
                checks[producers, consumers][name] = (
                    checks[producers, consumers].get(name, True) and ok
                )
    params = {
        "sizes": [f"{p}x{c}" for p, c in sizes],
        "duration_s": duration,
        "floor_clients": floor_clients,
        "floor_calls": floor_calls,
        "seed": seed,
        "queue_size": DEFAULT_QUEUE_SIZE,
        "add_wait_s": add_wait,
        "publish_wait_s": CHURN_PUBLISH_WAIT,
    }
    cases = [Case.of(f"{p}x{c}", rounds[p, c], checks[p, c]) for p, c in sizes]
    return BenchResult(
        "churn", repeat, params, cases, floor=Case.of(_floor_name(floor_clients), floors, {})
    )


# -- latency ---------------------------------------------------------------------


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
    with _MarketServer(ctx) as server, _Fleet(ctx, on_stop=server.close) as fleet:
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


# -- scale -----------------------------------------------------------------------


class _MemoryObserver(RunObserver):
    """Takes the memory of the server and of every agent process once all are released.

    ``rss`` and ``pss`` hold (bytes, agents in the process) per process read.
    """

    def __init__(self) -> None:
        self.run: LocalRun | None = None
        self.server_rss: int | None = None
        self.rss: list[tuple[int, int]] = []
        self.pss: list[tuple[int, int]] = []

    def on_started(self, producers: int, consumers: int) -> None:
        assert self.run is not None
        for server in _server_processes():
            self.server_rss = _rss(server)
        processes = []
        for pid, agents in self.run.agent_processes().items():
            with contextlib.suppress(psutil.Error):
                processes.append((psutil.Process(pid), agents))
        # RSS of all first (cheap), then PSS: both before consumers start leaving.
        rss = [(_rss(process), agents) for process, agents in processes]
        self.rss = [(value, agents) for value, agents in rss if value is not None]
        pss = [(_pss(process), agents) for process, agents in processes]
        self.pss = [(value, agents) for value, agents in pss if value is not None]


def _mb(value: float | None) -> float | None:
    return None if value is None else value / MB


def _per_agent(read: list[tuple[int, int]]) -> float | None:
    """MB per agent of the processes read: their sum over their agents."""
    return _mb(sum(value for value, _ in read) / sum(n for _, n in read)) if read else None


def _scale_round(
    agents: int, seed: int, start_method: str | None, agents_per_process: int = 1
) -> tuple[dict[str, float | None], dict[str, bool]]:
    workload = generate(agents // 2, agents - agents // 2, sessions=1, seed=seed)
    observer = _MemoryObserver()
    started = time.perf_counter()
    run = observer.run = LocalRun(
        workload,
        observer=observer,
        start_method=start_method,
        started_at=started,
        agents_per_process=agents_per_process,
    )
    report = run.run()
    figures = {
        "agents": agents,
        "processes": len(run.agent_processes(alive=False)),
        "startup_s": report.startup_s,
        "wall_s": report.wall_s,
        "server_rss_mb": _mb(observer.server_rss),
        "agent_rss_mb": _per_agent(observer.rss),
        "agent_pss_mb": _per_agent(observer.pss),
        "process_pss_max_mb": _mb(max(value for value, _ in observer.pss))
        if observer.pss
        else None,
        "processes_sampled": len(observer.rss),
    }
    checks = {"ok": report.ok, "bought_all": report.products_bought == workload.products_to_buy}
    return figures, checks


def run_scale(
    agents: int = 256,
    *,
    churn_seconds: float = 60.0,
    churn_size: tuple[int, int] = (4, 8),
    seed: int = 0,
    repeat: int = 3,
    start_method: str | None = None,
    agents_per_process: int = 1,
    progress: Progress = _quiet,
) -> BenchResult:
    """Start-up time and memory of a run of ``agents``, and the server's RSS over a churn."""
    if agents < 2:
        raise ValueError("scale needs at least 2 agents (a producer and a consumer)")
    ctx = process_context(start_method)
    scale_rounds: list[dict[str, float | None]] = []
    leak_rounds: list[dict[str, float | None]] = []
    scale_checks = {"ok": True, "bought_all": True}
    leak_checks: dict[str, bool] = {}
    producers, consumers = churn_size
    for number in range(repeat):
        progress(f"scale {agents} agents: round {number + 1} of {repeat}")
        figures, checks = _scale_round(agents, seed, start_method, agents_per_process)
        scale_rounds.append(figures)
        scale_checks = {name: scale_checks[name] and ok for name, ok in checks.items()}
        progress(f"scale leak check, churn {producers}x{consumers}: round {number + 1} of {repeat}")
        churn = _churn_round(
            producers, consumers, churn_seconds, ctx, seed=seed + number, watch_server=True
        )
        rss_start, rss_end = churn.server_rss
        leak_rounds.append(
            {
                "seconds": churn.seconds,
                "bought_per_s": churn.bought / churn.seconds,
                "server_rss_start_mb": _mb(rss_start),
                "server_rss_end_mb": _mb(rss_end),
                "server_rss_growth_mb": _mb(rss_end - rss_start)
                if rss_start is not None and rss_end is not None
                else None,
            }
        )
        for name, ok in churn.checks().items():
            leak_checks[name] = leak_checks.get(name, True) and ok
    params = {
        "agents": agents,
        "agents_per_process": agents_per_process,
        "seed": seed,
        "churn_seconds": churn_seconds,
        "churn_size": f"{producers}x{consumers}",
        "leak_warmup_s": min(LEAK_WARMUP, churn_seconds / 10),
        "pss_available": os.path.exists("/proc/self/smaps_rollup"),
    }
    cases = [
        Case.of(f"{agents} agents", scale_rounds, scale_checks),
        Case.of(f"churn {producers}x{consumers}", leak_rounds, leak_checks),
    ]
    return BenchResult("scale", repeat, params, cases)


# -- course ----------------------------------------------------------------------


COURSE_FIGURES = (
    "agents",
    "bought",
    "wall_s",
    "startup_s",
    "market_s",
    "ideal_s",
    "market_vs_ideal",
    "wall_vs_ideal",
)


def _simulator() -> Callable[[Workload], Any] | None:
    """``mpmarket.core.simulate.simulate``, or None while that module is missing."""
    try:
        from mpmarket.core.simulate import simulate
    except ImportError:
        return None
    return simulate


def _bought_lines(report: RunReport) -> Counter[str]:
    return Counter(
        purchase_line(consumer, product)
        for consumer, products in report.orders
        for product in products
    )


def run_course(
    directory: str | Path,
    *,
    repeat: int = 3,
    start_method: str | None = None,
    agents_per_process: int = 1,
    progress: Progress = _quiet,
) -> BenchResult:
    """Every ``*.in`` of ``directory`` through LocalRun, against the simulated ideal."""
    directory = Path(directory)
    paths = sorted(directory.glob("*.in"))
    if not paths:
        raise WorkloadError(str(directory), "", "a folder holding course cases (*.in)")
    workloads = [load_course_json(path) for path in paths]
    simulate = _simulator()
    ideals = [None if simulate is None else simulate(w).makespan for w in workloads]
    known_ideals = [ideal for ideal in ideals if ideal is not None]
    ideal_sum = sum(known_ideals) if len(known_ideals) == len(ideals) else None
    rounds: list[list[dict[str, float | None]]] = [[] for _ in paths]
    totals: list[dict[str, float | None]] = []
    # The simulator gives no makespan when the workload deadlocks: a real run
    # of it would never end, so it is not run.
    runnable = [simulate is None or ideal is not None for ideal in ideals]
    checks = [{"ok": ok, "correct": ok, "deadlock_free": ok} for ok in runnable]
    for number in range(repeat):
        sums: dict[str, float] = dict.fromkeys(
            ("agents", "bought", "wall_s", "startup_s", "market_s"), 0
        )
        for index, (path, workload, ideal) in enumerate(zip(paths, workloads, ideals, strict=True)):
            if not runnable[index]:
                progress(f"course {path.stem}: the simulator finds a deadlock, not run")
                agents = len(workload.producers) + len(workload.consumers)
                rounds[index].append(dict.fromkeys(COURSE_FIGURES) | {"agents": agents})
                continue
            progress(f"course {path.stem}: round {number + 1} of {repeat}")
            started = time.perf_counter()
            report = LocalRun(
                workload,
                start_method=start_method,
                started_at=started,
                agents_per_process=agents_per_process,
            ).run()
            figures = {
                "agents": len(workload.producers) + len(workload.consumers),
                "bought": report.products_bought,
                "wall_s": report.wall_s,
                "startup_s": report.startup_s,
                "market_s": report.market_s,
            }
            for name, value in figures.items():
                sums[name] += value
            rounds[index].append(
                figures
                | {
                    "ideal_s": ideal,
                    "market_vs_ideal": _ratio(report.market_s, ideal),
                    "wall_vs_ideal": _ratio(report.wall_s, ideal),
                }
            )
            checks[index]["ok"] &= report.ok
            checks[index]["correct"] &= _bought_lines(report) == expected_purchases(workload)
        totals.append(
            sums
            | {
                "ideal_s": ideal_sum,
                "market_vs_ideal": _ratio(sums["market_s"], ideal_sum),
                "wall_vs_ideal": _ratio(sums["wall_s"], ideal_sum),
            }
        )
    cases = [Case.of(path.stem, rounds[index], checks[index]) for index, path in enumerate(paths)]
    total_checks = {name: all(c[name] for c in checks) for name in checks[0]}
    cases.append(Case.of("total", totals, total_checks))
    params = {
        "directory": str(directory),
        "cases": len(paths),
        "agents_per_process": agents_per_process,
        "ideal_available": simulate is not None,
    }
    return BenchResult("course", repeat, params, cases)
