"""A local run: the server, one process per agent, orders collected as they come.

::

    LocalRun.run()
      │ start_server() ──────────────────────────> server process (Marketplace)
      │ one process per agent ──> _agent_main(): connect(), register / new_cart
      │ <── pipe ("ready",) ───────────────────       │
      │ all ready: start.set() ───────────────>       │ produce() / consume()
      │ <── pipe ("order", products) ──────────       │   through a MarketProxy
      │ <── pipe ("done",) / ("failed", why) ──       │
      │ last consumer done: market.close(), stop.set()
      │ join agents, bounded: join, terminate, kill; shut the server down
      └─> RunReport

Each agent process writes to a pipe of its own, and the runner waits with
``multiprocessing.connection.wait`` on every pipe and every process sentinel
at once: an order, a finished consumer or a dead process wakes it the moment
it happens. A killed agent breaks only its own pipe.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import time
import traceback
from dataclasses import dataclass, field
from multiprocessing import connection
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from mpmarket.agents import consume, produce
from mpmarket.errors import MarketClosedError, MarketUnavailableError, MpmarketError, RunError
from mpmarket.lifeline import Lifeline
from mpmarket.marketplace import MarketBooks
from mpmarket.products import Product
from mpmarket.server import (
    ATTACH_TIMEOUT,
    Address,
    MarketManager,
    MarketProxy,
    connect,
    new_authkey,
    start_server,
)
from mpmarket.workload import ConsumerSpec, ProducerSpec, Workload

__all__ = ["START_METHODS", "LocalRun", "RunObserver", "RunReport", "default_start_method"]

START_METHODS = ("fork", "forkserver", "spawn")

# Bounds of the escalating shutdown: ask (close the market), then wait this
# long for every agent, then terminate, then kill.
STOP_GRACE = 2.0
TERMINATE_GRACE = 1.0

# How often an agent waiting at the start barrier checks that the runner is
# still alive (so a killed runner leaves no agent behind).
PARENT_CHECK_INTERVAL = 0.5


def default_start_method() -> str:
    """fork where it exists (fast start-up of hundreds of agents), else spawn."""
    methods = multiprocessing.get_all_start_methods()
    return "fork" if "fork" in methods else "spawn"


class RunObserver:
    """What a run tells as it goes; the CLI overrides these to print."""

    def on_started(self, producers: int, consumers: int) -> None:
        """Every agent is attached and released."""

    def on_order(self, consumer: str, products: list[Product]) -> None:
        """A consumer placed an order."""

    def on_consumer_done(self, consumer: str) -> None:
        """A consumer finished its last session."""


@dataclass
class RunReport:
    """What a run did: its orders, its timings, and whatever went wrong."""

    source: str
    producers: int
    consumers: int
    orders: list[tuple[str, list[Product]]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    interrupted: bool = False
    books: MarketBooks | None = None
    startup_s: float = 0.0
    market_s: float = 0.0
    shutdown_s: float = 0.0
    wall_s: float = 0.0

    @property
    def products_bought(self) -> int:
        return sum(len(products) for _, products in self.orders)

    @property
    def ok(self) -> bool:
        return not self.failures and not self.interrupted


@dataclass
class _Agent:
    """The runner's view of one agent process."""

    name: str
    role: str
    process: BaseProcess
    channel: connection.Connection
    ready: bool = False
    done: bool = False


def _agent_main(
    role: str,
    spec: ProducerSpec | ConsumerSpec,
    address: Address,
    authkey: bytes,
    channel: connection.Connection,
    start: Any,
    stop: Any,
    parent_pid: int,
) -> None:
    """Entry point of an agent process (top level and picklable for spawn)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the runner handles Ctrl-C

    lifeline = Lifeline(parent_pid)

    def ready() -> None:
        channel.send(("ready",))
        while not start.wait(PARENT_CHECK_INTERVAL):
            if not lifeline.alive():
                raise SystemExit(1)

    def deliver(_consumer: str, products: list[Product]) -> None:
        channel.send(("order", products))

    try:
        market = connect(address, authkey, timeout=ATTACH_TIMEOUT)
        if role == "producer":
            produce(market, spec, stop, ready)  # type: ignore[arg-type]
        else:
            consume(market, spec, deliver, stop, ready)  # type: ignore[arg-type]
            channel.send(("done",))
    except MarketClosedError:
        pass  # the run is over: the normal end of a producer
    except MpmarketError as error:
        _report_failure(channel, str(error))
    except Exception:
        _report_failure(channel, traceback.format_exc(limit=3).strip().splitlines()[-1])


def _report_failure(channel: connection.Connection, message: str) -> None:
    with contextlib.suppress(OSError):
        channel.send(("failed", message))
    raise SystemExit(1)


class LocalRun:
    """Run a workload on this machine: server, agents, orders, shutdown.

    ``run()`` always leaves no process behind, whatever happens inside it.
    """

    def __init__(
        self,
        workload: Workload,
        *,
        observer: RunObserver | None = None,
        start_method: str | None = None,
        log_file: str | Path | None = None,
        started_at: float | None = None,
    ) -> None:
        self.workload = workload
        self.observer = observer or RunObserver()
        self.ctx: BaseContext = multiprocessing.get_context(start_method or default_start_method())
        self.log_file = log_file
        self.started_at = time.perf_counter() if started_at is None else started_at
        self.report = RunReport(workload.source, len(workload.producers), len(workload.consumers))
        self._manager: MarketManager | None = None
        self._market: MarketProxy | None = None
        self._agents: list[_Agent] = []
        self._start = self.ctx.Event()
        self._stop = self.ctx.Event()

    def run(self) -> RunReport:
        """Run to the end (or the first failure); KeyboardInterrupt is reported."""
        report = self.report
        market_started = shutdown_started = None
        try:
            authkey = new_authkey()
            self._manager = start_server(
                self.workload.queue_size_per_producer,
                authkey=authkey,
                ctx=self.ctx,
                log_file=self.log_file,
            )
            self._market = connect(self._manager.address, authkey)
            self._spawn_agents(self._manager.address, authkey)
            self._wait_until_ready()
            market_started = time.perf_counter()
            report.startup_s = market_started - self.started_at
            self._start.set()
            self.observer.on_started(report.producers, report.consumers)
            self._collect_orders()
        except KeyboardInterrupt:
            report.interrupted = True
        except MpmarketError as error:
            report.failures.append(str(error))
        finally:
            shutdown_started = time.perf_counter()
            if market_started is not None:
                report.market_s = shutdown_started - market_started
            self._shutdown()
            ended = time.perf_counter()
            report.shutdown_s = ended - shutdown_started
            report.wall_s = ended - self.started_at
        return report

    # -- phases --------------------------------------------------------------

    def _spawn_agents(self, address: Address, authkey: bytes) -> None:
        specs = [("producer", spec) for spec in self.workload.producers]
        specs += [("consumer", spec) for spec in self.workload.consumers]
        for role, spec in specs:
            reader, writer = self.ctx.Pipe(duplex=False)
            process = self.ctx.Process(
                target=_agent_main,
                name=spec.name,
                args=(role, spec, address, authkey, writer, self._start, self._stop, os.getpid()),
                daemon=True,
            )
            process.start()
            writer.close()
            self._agents.append(_Agent(spec.name, role, process, reader))

    def _wait_until_ready(self) -> None:
        waiting = len(self._agents)
        deadline = time.monotonic() + ATTACH_TIMEOUT + STOP_GRACE
        while waiting:
            for agent, message in self._next_messages(deadline - time.monotonic()):
                if message == ("ready",):
                    agent.ready = True
                    waiting -= 1
            if time.monotonic() > deadline:
                raise RunError(f"{waiting} agents did not attach within {ATTACH_TIMEOUT:.0f} s")

    def _collect_orders(self) -> None:
        consumers_left = sum(agent.role == "consumer" for agent in self._agents)
        while consumers_left:
            for agent, message in self._next_messages(None):
                if message[0] == "order":
                    self.report.orders.append((agent.name, message[1]))
                    self.observer.on_order(agent.name, message[1])
                elif message == ("done",):
                    consumers_left -= 1
                    self.observer.on_consumer_done(agent.name)

    def _next_messages(self, timeout: float | None) -> list[tuple[_Agent, tuple[Any, ...]]]:
        """Wait for pipes and sentinels; return messages, raise on a failure."""
        by_handle: dict[Any, _Agent] = {}
        for agent in self._agents:
            if not agent.channel.closed:
                by_handle[agent.channel] = agent
            elif not agent.done and agent.process.exitcode is None:
                by_handle[agent.process.sentinel] = agent
        messages = []
        for handle in connection.wait(list(by_handle), timeout):
            agent = by_handle[handle]
            if handle is not agent.channel:
                continue  # a sentinel: handled below once its pipe is drained
            try:
                while agent.channel.poll():
                    message = agent.channel.recv()
                    if message[0] == "failed":
                        raise RunError(f"{agent.role} {agent.name} failed: {message[1]}")
                    if message == ("done",):
                        agent.done = True
                    messages.append((agent, message))
            except EOFError:
                agent.channel.close()
                agent.process.join(TERMINATE_GRACE)
                if not agent.done:
                    raise RunError(self._death_notice(agent)) from None
        return messages

    @staticmethod
    def _death_notice(agent: _Agent) -> str:
        code = agent.process.exitcode
        if code is not None and code < 0:
            how = f"killed by {signal.Signals(-code).name}"
        else:
            how = f"exited with code {code}"
        return f"{agent.role} {agent.name} died ({how})"

    def _shutdown(self) -> None:
        """Close the market, stop the agents, stop the server: every step bounded."""
        if self._market is not None:
            try:
                self.report.books = self._market.books()
                self._market.close()
            except MpmarketError:
                pass
        self._stop.set()
        self._start.set()  # agents still at the barrier see the closed market
        processes = [agent.process for agent in self._agents]
        _join_all(processes, STOP_GRACE)
        for process in processes:
            if process.exitcode is None:
                process.terminate()
        _join_all(processes, TERMINATE_GRACE)
        for process in processes:
            if process.exitcode is None:
                process.kill()
        _join_all(processes, TERMINATE_GRACE)
        for agent in self._agents:
            agent.channel.close()
        if self._market is not None:
            self._market.disconnect()
        if self._manager is not None:
            with contextlib.suppress(OSError, EOFError, MarketUnavailableError):
                self._manager.shutdown()


def _join_all(processes: list[BaseProcess], timeout: float) -> None:
    """Wait until every process has exited or ``timeout`` has passed."""
    deadline = time.monotonic() + timeout
    alive = [p for p in processes if p.exitcode is None]
    while alive:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        connection.wait([p.sentinel for p in alive], remaining)
        alive = [p for p in alive if p.exitcode is None]
