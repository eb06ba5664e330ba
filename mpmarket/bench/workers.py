"""The benchmark processes: the run's fleet with one start barrier, the bench's market server.

Every benchmark measures real processes, started and stopped by the run's own
``AgentFleet`` (``mpmarket.run.fleet``) as one pseudo-agent each, so that they
start as a run's agents do (a bare fork under fork) and speak the same typed
messages (``mpmarket.run.messages``). ``_Fleet`` adds what a benchmark needs:
each process runs ``_worker_main(body, args, ...)``: ``body(*args, ready)``
sets itself up (connects, registers), calls ``ready()``, which says Ready on
the pipe and waits for the fleet's start, then does its work and sends its
value back as Result. The parent spawns, waits for every Ready, releases them
all at one moment (``release``), and reads every Result within a bound: the
first failure, death or timeout raises RunError. Leaving the fleet stops it:
``on_stop`` first (closing the market, so that blocked calls return), then
the fleet's stop: join, terminate, kill, each step bounded.

``_BenchServer`` is one measurement's market server with the parent's own
proxy; ``_server_processes``, ``_rss`` and ``_pss`` read the memory of the
server and of the agents.

::

    parent                                    benchmark process (x N)
    ------                                    -----------------------
    _Fleet.spawn ---- AgentFleet.spawn_process -> _worker_main: body(*args, ready)
    wait_ready  <------- Ready ---------------  ready(): waits for the start
    release()   -------- start.set() -------->  the measured work
    results()   <------- Result(value) -------  (or Failed(why), exit 1)
    stop(): on_stop, the fleet's stop: join, terminate, kill

Clocks: ``time.perf_counter`` is CLOCK_MONOTONIC on Linux, one clock for the
whole system, so times taken in different processes compare directly.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import time
import traceback
from collections.abc import Callable
from multiprocessing import connection
from multiprocessing.context import BaseContext
from typing import Any, Self

import psutil

from mpmarket.core.books import MarketBooks
from mpmarket.core.workload import DEFAULT_QUEUE_SIZE
from mpmarket.errors import MarketUnavailableError, MpmarketError, RunError
from mpmarket.net.classic import ClassicManager, ClassicProxy, connect_classic, start_classic_server
from mpmarket.net.client import ATTACH_TIMEOUT, MarketProxy, connect
from mpmarket.net.server import MarketManager, new_authkey, start_server
from mpmarket.net.wire import Address
from mpmarket.proc.interrupts import child_signals
from mpmarket.proc.lifeline import PARENT_CHECK_INTERVAL, STOP_GRACE, Lifeline
from mpmarket.run.fleet import AgentFleet
from mpmarket.run.messages import Died, Failed, Ready, Result, encode

__all__ = ["READY_TIMEOUT", "RESULT_GRACE"]

# Bounds of the benchmark processes: attach and reach the start barrier,
# answer after the work is done, and the escalating stop.
READY_TIMEOUT = ATTACH_TIMEOUT + 5.0
RESULT_GRACE = 30.0

# What the fleet calls a benchmark process (the role of its pseudo-agent).
_ROLE = "benchmark process"

# This benchmark process's lifeline, set by _worker_main (None in the parent).
_lifeline: Lifeline | None = None


def _parent_gone() -> bool:
    """True in a benchmark process once the benchmark that started it has died."""
    return _lifeline is not None and not _lifeline.alive()


def _worker_main(
    body: Callable[..., Any],
    args: tuple[Any, ...],
    channel: connection.Connection,
    start: Any,
    stop: Any,
    run_pid: int,
) -> None:
    """Entry point of every benchmark process: ``body(*args, ready)``, Result to the pipe.

    ``ready()`` tells the parent this process is set up and waits for the
    start. The fleet's ``stop`` event goes unused: a benchmark stops its
    processes by closing the market (``on_stop``).
    """
    global _lifeline
    # The parent handles Ctrl-C and SIGHUP; SIGTERM ends this process. Started
    # with them held back (forked.start_child): let them in, or SIGTERM never comes.
    child_signals()
    lifeline = _lifeline = Lifeline(run_pid)

    def ready() -> None:
        channel.send(encode(Ready(0)))
        while not start.wait(PARENT_CHECK_INTERVAL):
            if not lifeline.alive():
                raise SystemExit(1)

    try:
        # A value that does not pickle fails here, before a byte is written.
        channel.send(encode(Result(0, body(*args, ready))))
        return
    except MpmarketError as error:
        message = str(error) or type(error).__name__
    except Exception:
        message = traceback.format_exc(limit=3).strip().splitlines()[-1]
    with contextlib.suppress(OSError):
        channel.send(encode(Failed(0, message)))
    raise SystemExit(1)


class _Fleet:
    """Benchmark processes in the run's fleet: one start barrier, results in spawn order.

    Used as a context manager: leaving it calls ``on_stop`` (for instance,
    closing the market so that blocked calls return), then stops the fleet:
    join, terminate, kill, each step bounded.
    """

    def __init__(self, ctx: BaseContext, on_stop: Callable[[], None] = lambda: None) -> None:
        self.fleet = AgentFleet(ctx)
        self._on_stop = on_stop

    def __enter__(self) -> _Fleet:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def spawn(self, name: str, body: Callable[..., Any], *args: Any) -> None:
        self.fleet.spawn_process(name, _worker_main, (body, args), _ROLE)

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        self._gather(Ready, timeout)

    def release(self) -> float:
        """Let every process go; return the moment (perf_counter) it happened."""
        started = time.perf_counter()
        self.fleet.release()
        return started

    def results(self, timeout: float) -> list[Any]:
        """Each process's result, in spawn order."""
        return self._gather(Result, timeout)

    def _gather(self, expected: type[Ready | Result], timeout: float) -> list[Any]:
        """One ``expected`` message from every process; RunError on anything else."""
        deadline = time.monotonic() + timeout
        workers = self.fleet.agents
        index = {id(worker): number for number, worker in enumerate(workers)}
        answers: dict[int, Any] = {}
        while len(answers) < len(workers):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RunError(
                    f"{len(workers) - len(answers)} benchmark processes"
                    f" did not answer within {timeout:.0f} s"
                )
            for worker, message in self.fleet.next_messages(remaining):
                match message:
                    case Failed(why=why):
                        raise RunError(f"benchmark process {worker.name} failed: {why}")
                    case Died():
                        raise RunError(
                            f"benchmark process {worker.name} died"
                            f" (exit code {worker.process.exitcode})"
                        )
                    case Ready() if expected is Ready:
                        answers[index[id(worker)]] = None
                    case Result(value=value) if expected is Result:
                        answers[index[id(worker)]] = value
                    case _:
                        raise RunError(
                            f"benchmark process {worker.name} sent {type(message).__name__}"
                        )
        return [answers[number] for number in range(len(workers))]

    def stop(self) -> None:
        with contextlib.suppress(MpmarketError, OSError, EOFError):
            self._on_stop()
        # Processes still at the barrier go on and find the end; then join,
        # terminate, kill.
        self.fleet.stop(STOP_GRACE, on_order=lambda _agent, _products: None)


class _BenchServer:
    """A market server for one measurement, with the parent's own proxy.

    mpmarket's, or with ``classic`` the course's design on its stock server
    (``mpmarket.net.classic``). Leaving it closes the market, drops the proxy
    and shuts the server down.
    """

    def __init__(
        self, ctx: BaseContext, queue_size: int = DEFAULT_QUEUE_SIZE, *, classic: bool = False
    ) -> None:
        self.authkey = new_authkey()
        start = start_classic_server if classic else start_server
        self.manager: MarketManager | ClassicManager = start(
            queue_size, authkey=self.authkey, ctx=ctx
        )
        # A TCP address: both servers listen on ("127.0.0.1", 0).
        self.address: Address = self.manager.address
        try:
            self.market: MarketProxy | ClassicProxy = (
                connect_classic(self.address, self.authkey, timeout=ATTACH_TIMEOUT)
                if classic
                else connect(self.address, self.authkey)
            )
        except BaseException:
            self._shutdown()
            raise

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
        self.market.disconnect()
        self._shutdown()

    def close(self) -> None:
        """Close the market: blocked calls raise MarketClosedError."""
        with contextlib.suppress(MpmarketError):
            self.market.close()

    def books(self) -> MarketBooks:
        return self.market.books()

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
