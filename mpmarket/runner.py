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

With ``connect=`` (``mpmarket run --connect``) the run starts no server: its
agents attach to a market served elsewhere (``mpmarket serve``), maybe with
agents of other machines. The market is not this run's to end, so:

- when its consumers are done, the run stops its own producers (they notice
  within a per-try wait) and leaves the market open; with ``close_market``
  it closes it, which ends the producers attached from anywhere;
- a run without consumers ends when the market is closed (its producers get
  ``MarketClosedError`` and say so: a clean end, exit 0);
- the server is never shut down.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import time
import traceback
from dataclasses import dataclass, field, replace
from multiprocessing import connection
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from mpmarket.agents import WAIT_PER_TRY, consume, produce
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

__all__ = [
    "START_METHODS",
    "LocalRun",
    "RunObserver",
    "RunReport",
    "default_start_method",
    "pick_agents",
]

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


def pick_agents(
    workload: Workload,
    *,
    only: str | None = None,
    names: tuple[str, ...] = (),
    shard: tuple[int, int] | None = None,
) -> Workload:
    """The part of a workload this machine runs, so one file can be split.

    ``only`` keeps the producers or the consumers; ``names`` keeps those
    agents; ``shard`` ``(k, n)`` then keeps every n-th of what is left,
    starting at the k-th (1-based), producers first, in file order: the n
    shards of a workload are disjoint and cover it. ValueError (one line) for
    an unknown name or an empty choice.
    """
    producers, consumers = list(workload.producers), list(workload.consumers)
    if only == "producers":
        consumers = []
    elif only == "consumers":
        producers = []
    elif only is not None:
        raise ValueError(f"--only takes producers or consumers, got {only!r}")
    if names:
        known = {agent.name for agent in (*workload.producers, *workload.consumers)}
        unknown = [name for name in names if name not in known]
        if unknown:
            raise ValueError(f"no agent named {', '.join(unknown)} in {workload.source}")
        producers = [agent for agent in producers if agent.name in names]
        consumers = [agent for agent in consumers if agent.name in names]
    if shard is not None:
        k, n = shard
        split = len(producers)
        indexed = list(enumerate([*producers, *consumers]))
        producers = [a for i, a in indexed[:split] if i % n == k - 1]  # type: ignore[misc]
        consumers = [a for i, a in indexed[split:] if i % n == k - 1]  # type: ignore[misc]
    if not producers and not consumers:
        raise ValueError(f"no agent of {workload.source} is left to run here")
    return replace(workload, producers=tuple(producers), consumers=tuple(consumers))


class RunObserver:
    """What a run tells as it goes; the CLI overrides these to print."""

    def on_started(self, producers: int, consumers: int) -> None:
        """Every agent is attached and released."""

    def on_order(self, consumer: str, products: list[Product]) -> None:
        """A consumer placed an order."""

    def on_consumer_done(self, consumer: str) -> None:
        """A consumer finished its last session."""

    def on_producer_closed(self, producer: str) -> None:
        """A producer ended because the market was closed (a --connect run)."""


@dataclass
class RunReport:
    """What a run did: its orders, its timings, and whatever went wrong."""

    source: str
    producers: int
    consumers: int
    orders: list[tuple[str, list[Product]]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    interrupted: bool = False
    attach_failed: bool = False  # the market could not be reached or refused us
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
        market = connect(address, authkey, timeout=ATTACH_TIMEOUT, role=role)
        if role == "producer":
            produce(market, spec, stop, ready)  # type: ignore[arg-type]
        else:
            consume(market, spec, deliver, stop, ready)  # type: ignore[arg-type]
            channel.send(("done",))
    except MarketClosedError:
        if role == "consumer":  # someone else closed the market too early
            _report_failure(channel, "the market was closed before it finished")
        with contextlib.suppress(OSError):  # the normal end of a producer
            channel.send(("closed",))
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

    With ``connect`` (an address) and ``authkey``, no server is started: the
    agents attach to that market, the runner first trying for
    ``connect_timeout`` seconds; ``close_market`` closes it once this run's
    consumers are done. See the module docstring.
    """

    def __init__(
        self,
        workload: Workload,
        *,
        observer: RunObserver | None = None,
        start_method: str | None = None,
        log_file: str | Path | None = None,
        started_at: float | None = None,
        connect: Address | None = None,
        authkey: bytes | None = None,
        connect_timeout: float = ATTACH_TIMEOUT,
        close_market: bool = False,
    ) -> None:
        if connect is not None and authkey is None:
            raise ValueError("connect needs the market's authkey")
        self.workload = workload
        self.observer = observer or RunObserver()
        self.ctx: BaseContext = multiprocessing.get_context(start_method or default_start_method())
        self.log_file = log_file
        self.started_at = time.perf_counter() if started_at is None else started_at
        self.connect = connect
        self._authkey = authkey
        self.connect_timeout = connect_timeout
        self.close_market = close_market
        self._finished = False
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
            address, authkey = self._attach()
            self._spawn_agents(address, authkey)
            self._wait_until_ready()
            market_started = time.perf_counter()
            report.startup_s = market_started - self.started_at
            self._start.set()
            self.observer.on_started(report.producers, report.consumers)
            self._collect_orders()
            self._finished = True
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

    def _attach(self) -> tuple[Address, bytes]:
        """Start the server (or find the one to connect to) and attach to it."""
        if self.connect is not None:
            address, authkey = self.connect, self._authkey
            assert authkey is not None
        else:
            authkey = new_authkey()
            self._manager = start_server(
                self.workload.queue_size_per_producer,
                authkey=authkey,
                ctx=self.ctx,
                log_file=self.log_file,
            )
            address = self._manager.address
        try:
            self._market = connect(
                address, authkey, timeout=self.connect_timeout, role="runner", name="mpmarket run"
            )
        except MarketUnavailableError:
            self.report.attach_failed = True
            raise
        return address, authkey

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
        """Until every consumer is done; with --connect and none, every producer."""
        consumers_left = sum(agent.role == "consumer" for agent in self._agents)
        producers_left = len(self._agents) - consumers_left
        if consumers_left or self.connect is None:
            producers_left = 0  # they are stopped once the consumers are done
        while consumers_left or producers_left:
            for agent, message in self._next_messages(None):
                if message[0] == "order":
                    self.report.orders.append((agent.name, message[1]))
                    self.observer.on_order(agent.name, message[1])
                elif message == ("done",):
                    consumers_left -= 1
                    self.observer.on_consumer_done(agent.name)
                elif message == ("closed",):
                    producers_left = max(producers_left - 1, 0)
                    self.observer.on_producer_closed(agent.name)

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
                    if message in (("done",), ("closed",)):
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
        """Close the market, stop the agents, stop the server: every step bounded.

        A --connect run closes the market only when asked to and done, and
        gives its producers a per-try wait more to notice the stop.
        """
        own_market = self.connect is None
        if self._market is not None:
            try:
                self.report.books = self._market.books()
                if own_market or (self.close_market and self._finished):
                    self._market.close()
            except MpmarketError:
                pass
        self._stop.set()
        self._start.set()  # agents still at the barrier see the stop
        processes = [agent.process for agent in self._agents]
        self._drain(STOP_GRACE if own_market else STOP_GRACE + WAIT_PER_TRY)
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

    def _drain(self, timeout: float) -> None:
        """Join the agents for up to ``timeout``, still recording their orders.

        A stopped consumer of a --connect run finishes the add it is in and
        may order it: what was bought is printed, not lost.
        """
        deadline = time.monotonic() + timeout
        while True:
            by_handle = {a.channel: a for a in self._agents if not a.channel.closed}
            handles: list[Any] = list(by_handle)
            handles += [a.process.sentinel for a in self._agents if a.process.exitcode is None]
            remaining = deadline - time.monotonic()
            if not handles or remaining <= 0:
                return
            for handle in connection.wait(handles, remaining):
                agent = by_handle.get(handle)
                if agent is None:
                    continue  # a sentinel: its pipe reports the end
                try:
                    while agent.channel.poll():
                        message = agent.channel.recv()
                        if message[0] == "order":
                            self.report.orders.append((agent.name, message[1]))
                            self.observer.on_order(agent.name, message[1])
                except (EOFError, OSError):
                    agent.channel.close()


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
