"""``run_floor``: what a no-op manager call costs, the reference of every ratio.

A no-op BaseManager method call, from 1 and from 8 client processes:
calls/s in all and the mean round trip. The floor every ratio is measured
against; each benchmark that quotes a ratio measures its own floor in the
same invocation (``_floor_round``, which churn and latency call).

Figures: ``calls_per_s`` (all clients together), ``rt_us`` (mean round trip
of one call as a client sees it).

Why this module subclasses ``multiprocessing.managers`` (``Server``,
``BaseManager``, ``BaseProxy``) although ``mpmarket.net.server`` is otherwise
the only module that touches them: the floor measures the *stock* manager,
not mpmarket. Its no-op server is the standard library's own (a thread per
connection, one id_to_obj lookup, one exposed check, one method call, one
pickled reply), so the floor is the cost of a proxy call over the plain
transport, and what mpmarket's server and market add (the serving loop, the
hello, the market's lock and waits) shows in the other benchmarks' ratios
against it. Serving the no-op through mpmarket's server would fold those
costs into the reference. It is the benchmark's reference server, so it
lives here and nowhere else.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Sequence
from multiprocessing import managers
from multiprocessing.context import BaseContext

from mpmarket.bench.results import BenchResult, Case, Progress, _quiet
from mpmarket.bench.workers import RESULT_GRACE, _Fleet
from mpmarket.net.server import new_authkey
from mpmarket.net.wire import Address
from mpmarket.proc.context import process_context

__all__ = ["FLOOR_WARMUP_CALLS", "run_floor"]

# No-op calls each floor client makes before the measured ones: the first
# call connects, the next few warm the server thread and the caches.
FLOOR_WARMUP_CALLS = 20

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
        self.id_to_obj[_NOOP_IDENT] = (_NoOp(), {"noop"}, {})


class _FloorManager(managers.BaseManager):
    _Server = _FloorServer


class _NoOpProxy(managers.BaseProxy):
    _exposed_ = ("noop",)

    def noop(self) -> None:
        return self._callmethod("noop")


def _floor_client(
    address: Address, authkey: bytes, calls: int, ready: Callable[[], None]
) -> tuple[int, float, float]:
    token = managers.Token("NoOp", address, _NOOP_IDENT)
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
