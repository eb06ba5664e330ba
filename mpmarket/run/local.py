"""A local run: the server, a process per agent, orders collected as they come.

::

    LocalRun.run()
      │ start_server() ──────────────────────────> server process (Marketplace)
      │ one process per agent ──> _agent_main(): connect(), register / new_cart
      │ <── pipe ("ready", cart or producer id) ─     │
      │ all ready: start.set() ───────────────>       │ produce() / consume()
      │ <── pipe ("order", products) ──────────       │   through a MarketProxy
      │ <── pipe ("done", stats) / ("failed", why)    │
      │ last consumer done: market.close(), stop.set()
      │ join agents, bounded: join, terminate, kill; shut the server down
      └─> RunReport

Each agent process writes to a pipe of its own, and the runner waits with
``multiprocessing.connection.wait`` on every pipe and every process sentinel
at once: an order, a finished consumer or a dead process wakes it the moment
it happens. A killed agent breaks only its own pipe. Under the fork start
method an agent process is a bare fork (``forked.ForkedProcess``), without
what ``multiprocessing.Process`` costs hundreds of agents.

With ``agents_per_process`` N > 1, up to N agents of one role share a
process, a thread and a connection each (``_process_main``); their messages
carry their place in the process, and a process that dies is the death of
each agent of it that had not finished.

With ``connect=`` (``mpmarket run --connect``) the run starts no server: its
agents attach to a market served elsewhere (``mpmarket serve``), maybe with
agents of other machines. The market is not this run's to end, so:

- when its consumers are done, the run stops its own producers (they notice
  within a per-try wait) and leaves the market open; with ``close_market``
  it closes it, which ends the producers attached from anywhere;
- a run without consumers ends when the market is closed (its producers get
  ``MarketClosedError`` and say so: a clean end, exit 0);
- the server is never shut down.

Faults. A consumer process that dies gives its cart back: the runner sees its
sentinel at once and calls ``release_cart`` with the cart id the agent gave at
the barrier. A dead producer's products stay on sale. Either is reported by
name, and the others keep running (``fail_fast`` stops the run instead). The
run samples the market every ``SAMPLE_INTERVAL_S``: when no consumer makes
progress for ``stall_timeout`` seconds, it stops and explains who waits for
what (``stall.diagnose``). A local server that dies ends the run at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from multiprocessing import connection
from typing import Any

from mpmarket.core.agents import WAIT_PER_TRY, AgentStats, consume, produce
from mpmarket.core.stall import diagnose
from mpmarket.core.workload import (
    ConsumerSpec,
    Op,
    ProducerSpec,
    Workload,
    dump_toml,
    verify_orders,
)
from mpmarket.errors import (
    MarketClosedError,
    MarketLostError,
    MarketUnavailableError,
    MpmarketError,
    RunError,
    StallError,
)
from mpmarket.net.client import ATTACH_TIMEOUT, MarketProxy, connect
from mpmarket.net.oplog import LogSettings
from mpmarket.net.server import MarketManager, new_authkey, start_server
from mpmarket.net.wire import Address, format_address
from mpmarket.proc.context import START_METHODS, default_start_method, process_context
from mpmarket.proc.forked import start_child
from mpmarket.proc.lifeline import (
    PARENT_CHECK_INTERVAL,
    STOP_GRACE,
    TERMINATE_GRACE,
    ChildProcess,
    Lifeline,
    join_all,
    stop_processes,
)
from mpmarket.products import Product
from mpmarket.run.report import AgentDeath, RunObserver, RunReport
from mpmarket.run.timeline import SAMPLE_INTERVAL_S, Sample, Timeline

__all__ = [
    "START_METHODS",
    "LocalRun",
    "Member",
    "RunObserver",
    "RunReport",
    "default_start_method",
    "pack_agents",
    "pick_agents",
    "process_context",
]

# How long the runner gives its server's death to show when an agent says it
# lost the market (its own sentinel may come a little later).
SERVER_DEATH_GRACE = 1.0


# A run is stalled when no consumer made progress for this long, unless the
# workload's own times call for more (see default_stall_timeout).
STALL_FLOOR_S = 10.0


def default_stall_timeout(workload: Workload) -> float:
    """Long enough for the slowest legitimate wait of this workload, times three.

    A consumer may wait a whole production cycle of the slowest producer (its
    make times added up) plus a wait time before its product comes.
    """
    cycle = max(
        (sum(step.quantity * step.make_time for step in spec.steps) for spec in workload.producers),
        default=0.0,
    )
    waits = [spec.republish_wait_time for spec in workload.producers]
    waits += [spec.retry_wait_time for spec in workload.consumers]
    return max(STALL_FLOOR_S, 3 * (cycle + max(waits, default=0.0)))


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


@dataclass
class _Agent:
    """The runner's view of one agent (the agents of a process share its pipe)."""

    name: str
    role: str
    process: ChildProcess
    done: bool = False  # finished, died or failed: nothing more to wait for
    ident: int | None = None  # its cart id (consumer) or producer id
    stats: dict[str, Any] | None = None  # its AgentStats, sent as it ends
    sessions: int = 0
    orders: int = 0


Member = tuple[str, ProducerSpec | ConsumerSpec]  # an agent of a process: role, spec
_Send = Callable[..., None]  # send(kind, *fields) on the process's pipe


def pack_agents(workload: Workload, agents_per_process: int) -> list[list[Member]]:
    """The agents of each process of a run: up to N of one role, in workload order.

    Producers come first, then consumers; a process never holds both.
    """
    packs = []
    for role, specs in (("producer", workload.producers), ("consumer", workload.consumers)):
        for first in range(0, len(specs), agents_per_process):
            packs.append([(role, spec) for spec in specs[first : first + agents_per_process]])
    return packs


def _process_main(
    members: list[Member],
    address: Address,
    authkey: bytes,
    channel: connection.Connection,
    start: Any,
    stop: Any,
    parent_pid: int,
) -> None:
    """Entry point of an agent process (top level and picklable for spawn).

    One agent runs on the main thread. Several (``agents_per_process``) run a
    thread each, with a connection each; every message goes through the one
    pipe tagged with the agent's place in ``members``.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the runner handles Ctrl-C
    lifeline = Lifeline(parent_pid)
    sending = threading.Lock()

    def outbox(slot: int) -> _Send:
        def send(*message: Any) -> None:
            with sending:
                channel.send((slot, *message))

        return send

    if len(members) == 1:
        role, spec = members[0]
        _agent_main(role, spec, address, authkey, outbox(0), start, stop, lifeline)
        return
    threads = [
        threading.Thread(
            target=_agent_main,
            args=(role, spec, address, authkey, outbox(slot), start, stop, lifeline),
            name=spec.name,
        )
        for slot, (role, spec) in enumerate(members)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _agent_main(
    role: str,
    spec: ProducerSpec | ConsumerSpec,
    address: Address,
    authkey: bytes,
    send: _Send,
    start: Any,
    stop: Any,
    lifeline: Lifeline,
) -> None:
    """One agent, from attaching to its last word on the pipe.

    A failure ends it with SystemExit: the process's exit code, or just the
    end of its thread when it shares the process.
    """

    def ready(ident: int) -> None:
        send("ready", ident)
        while not start.wait(PARENT_CHECK_INTERVAL):
            if not lifeline.alive():
                raise SystemExit(1)

    def deliver(_consumer: str, products: list[Product]) -> None:
        send("order", products)

    stats = AgentStats()
    try:
        market = connect(address, authkey, timeout=ATTACH_TIMEOUT, role=role, name=spec.name)
        if role == "producer":
            try:
                produce(market, spec, stop, ready, stats)  # type: ignore[arg-type]
            finally:
                with contextlib.suppress(OSError):
                    send("stats", asdict(stats))
        else:
            consume(market, spec, deliver, stop, ready, stats)  # type: ignore[arg-type]
            send("done", asdict(stats))
    except MarketClosedError:
        if role == "consumer":  # someone else closed the market too early
            _report_failure(send, "the market was closed before it finished")
        with contextlib.suppress(OSError):  # the normal end of a producer
            send("closed")
    except MarketUnavailableError as error:
        _report_failure(send, str(error), market_lost=True)
    except MpmarketError as error:
        _report_failure(send, str(error))
    except Exception:
        _report_failure(send, traceback.format_exc(limit=3).strip().splitlines()[-1])


def _report_failure(send: _Send, message: str, *, market_lost: bool = False) -> None:
    with contextlib.suppress(OSError):
        send("failed", message, market_lost)
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
        log: LogSettings | None = None,
        started_at: float | None = None,
        connect: Address | None = None,
        authkey: bytes | None = None,
        connect_timeout: float = ATTACH_TIMEOUT,
        close_market: bool = False,
        fail_fast: bool = False,
        stall_timeout: float | None = None,
        deadline_s: float | None = None,
        kills: tuple[tuple[float, str], ...] = (),
        audit: bool = False,
        agents_per_process: int = 1,
    ) -> None:
        if connect is not None and authkey is None:
            raise ValueError("connect needs the market's authkey")
        if agents_per_process < 1:
            raise ValueError(f"agents_per_process must be at least 1, got {agents_per_process}")
        self.workload = workload
        self.observer = observer or RunObserver()
        self.ctx = process_context(start_method)
        self.log = log
        self.started_at = time.perf_counter() if started_at is None else started_at
        self.connect = connect
        self._authkey = authkey
        self.connect_timeout = connect_timeout
        self.close_market = close_market
        self.fail_fast = fail_fast
        self.stall_timeout = (
            default_stall_timeout(workload) if stall_timeout is None else stall_timeout
        )
        self.deadline_s = deadline_s
        self.kills = sorted(kills)
        self.audit = audit
        self.agents_per_process = agents_per_process
        self._finished = False
        self.report = RunReport(workload.source, len(workload.producers), len(workload.consumers))
        self.report.settings = {
            "queue_size_per_producer": workload.queue_size_per_producer,
            "start_method": self.ctx.get_start_method(),
            "stall_timeout_s": self.stall_timeout,
            "connect": format_address(connect) if connect is not None else None,
            "fail_fast": fail_fast,
            "agents_per_process": agents_per_process,
        }
        self.report.timeline = Timeline(
            producers=tuple(spec.name for spec in workload.producers),
            consumers=tuple(spec.name for spec in workload.consumers),
            queue_size_per_producer=workload.queue_size_per_producer,
            products_to_buy=workload.products_to_buy,
            sessions_to_run=workload.sessions,
        )
        self._manager: MarketManager | None = None
        self._market: MarketProxy | None = None
        self._agents: list[_Agent] = []
        self._by_channel: dict[connection.Connection, list[_Agent]] = {}  # a process's agents
        self._start = self.ctx.Event()
        self._stop = self.ctx.Event()

    def run(self) -> RunReport:
        """Run to the end (or the first failure); KeyboardInterrupt is reported."""
        report = self.report
        report.started_utc = _utc_now()
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
            self._sample(time.perf_counter() - market_started, final=True)
        except KeyboardInterrupt:
            report.interrupted = True
        except StallError as error:
            report.stall = list(error.lines)
        except MarketLostError as error:
            report.market_lost = True
            report.failures.append(str(error))
        except MarketUnavailableError as error:
            report.market_lost = report.market_s > 0 or market_started is not None
            report.failures.append(str(error))
        except MpmarketError as error:
            report.failures.append(str(error))
        finally:
            shutdown_started = time.perf_counter()
            if market_started is not None:
                report.market_s = shutdown_started - market_started
            try:
                self._shutdown()
            except KeyboardInterrupt:  # a second Ctrl-C: no more grace
                report.interrupted = True
                self._kill_everything()
            report.violations += verify_orders(self.workload, report.orders)
            report.agents = [
                {"name": a.name, "role": a.role, **(a.stats or {})} for a in self._agents
            ]
            sold = report.books.sold_per_producer if report.books is not None else ()
            for agent, entry in zip(self._agents, report.agents, strict=True):
                if agent.role == "producer" and agent.ident is not None and agent.ident < len(sold):
                    entry["sold"] = sold[agent.ident]
            report.ended_utc = _utc_now()
            ended = time.perf_counter()
            report.shutdown_s = ended - shutdown_started
            report.wall_s = ended - self.started_at
        # After the timings: a big workload takes a moment to write out.
        report.workload_digest = hashlib.sha256(dump_toml(self.workload).encode()).hexdigest()
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
                log=self.log,
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
        """Start the agent processes: producers, then consumers, packed by role."""
        for members in pack_agents(self.workload, self.agents_per_process):
            self._spawn_process(members, address, authkey)

    def _spawn_process(self, members: list[Member], address: Address, authkey: bytes) -> None:
        reader, writer = self.ctx.Pipe(duplex=False)
        names = [spec.name for _, spec in members]
        process = start_child(
            self.ctx,
            _process_main,
            names[0] if len(names) == 1 else f"{names[0]}..{names[-1]}",
            (members, address, authkey, writer, self._start, self._stop, os.getpid()),
        )
        writer.close()
        agents = [
            _Agent(
                spec.name,
                role,
                process,
                sessions=len(spec.sessions) if isinstance(spec, ConsumerSpec) else 0,
            )
            for role, spec in members
        ]
        self._agents += agents
        self._by_channel[reader] = agents

    def _wait_until_ready(self) -> None:
        waiting = len(self._agents)
        deadline = time.monotonic() + ATTACH_TIMEOUT + STOP_GRACE
        while waiting:
            for agent, message in self._next_messages(deadline - time.monotonic()):
                if message[0] == "ready":
                    agent.ident = message[1]
                    waiting -= 1
                elif message[0] in ("failed", "died"):
                    raise RunError(f"{agent.role} {agent.name} {message[1]} before the start")
            if time.monotonic() > deadline:
                raise RunError(f"{waiting} agents did not attach within {ATTACH_TIMEOUT:.0f} s")

    def _collect_orders(self) -> None:
        """Until every consumer is done; with --connect and none, every producer.

        Wakes for each message, for each death, and every sample interval to
        sample the market, check for a stall, and run the kill schedule.
        """
        consumers_left = sum(agent.role == "consumer" for agent in self._agents)
        producers_left = len(self._agents) - consumers_left
        if consumers_left or self.connect is None:
            producers_left = 0  # they are stopped once the consumers are done
        began = time.monotonic()
        self._progress = (None, began)
        next_sample = began
        kills = list(self.kills)
        while consumers_left or producers_left:
            now = time.monotonic()
            if now >= next_sample:
                self._sample(now - began)
                next_sample = now + SAMPLE_INTERVAL_S
            while kills and now - began >= kills[0][0]:
                self._kill(kills.pop(0)[1])
            if self.deadline_s is not None and now - began >= self.deadline_s:
                self.report.cut_short = True
                return
            wake = next_sample
            if kills:
                wake = min(wake, began + kills[0][0])
            if self.deadline_s is not None:
                wake = min(wake, began + self.deadline_s)
            for agent, message in self._next_messages(max(0.0, wake - time.monotonic())):
                kind = message[0]
                if kind == "order":
                    self._record_order(agent, message[1])
                elif kind == "done":
                    consumers_left -= 1
                    self.observer.on_consumer_done(agent.name)
                elif kind == "closed":
                    producers_left = max(producers_left - 1, 0)
                    self.observer.on_producer_closed(agent.name)
                elif kind in ("failed", "died"):
                    self._lost_agent(agent, message[1], market_lost=message[2:] == (True,))
                    if agent.role == "consumer":
                        consumers_left -= 1
                    else:
                        producers_left = max(producers_left - 1, 0)

    def _lost_agent(self, agent: _Agent, how: str, market_lost: bool = False) -> None:
        """An agent died or failed: give its cart back, report it, go on (or not).

        An agent that lost the market may be the first to see the server die:
        its sentinel can come later than the agent's word (under forkserver
        the fork server relays it), so the server gets a moment to be seen.
        """
        server = self._manager._process if self._manager is not None else None
        if market_lost and server is not None:
            server.join(SERVER_DEATH_GRACE)
            if server.exitcode is not None:
                raise MarketLostError(f"the market server died ({_how_it_ended(server)})")
        released = 0
        if agent.role == "consumer" and agent.ident is not None and self._market is not None:
            with contextlib.suppress(MpmarketError):
                released = self._market.release_cart(agent.ident)
        death = AgentDeath(agent.name, agent.role, how, agent.orders, agent.sessions, released)
        self.report.deaths.append(death)
        self.observer.on_agent_died(death)
        if self.fail_fast:
            raise RunError(death.describe())

    def _kill(self, name: str) -> None:
        """Fault injection: SIGKILL the named agent's process (and so its pack), if it runs."""
        for agent in self._agents:
            if agent.name == name and agent.process.exitcode is None and not agent.done:
                agent.process.kill()

    def _processes(self) -> list[ChildProcess]:
        return [agents[0].process for agents in self._by_channel.values()]

    def agent_processes(self, *, alive: bool = True) -> dict[int, int]:
        """The agent processes started: pid -> how many agents it runs (for memory figures)."""
        sizes = {}
        for agents in self._by_channel.values():
            process = agents[0].process
            if process.pid is not None and not (alive and process.exitcode is not None):
                sizes[process.pid] = len(agents)
        return sizes

    def _sample(self, elapsed: float, *, final: bool = False) -> None:
        """Look at the market: timeline, audit, and (but for the last) the stall check."""
        assert self._market is not None and self.report.timeline is not None
        books = self._market.books()
        timeline = self.report.timeline
        consumers = [a for a in self._agents if a.role == "consumer"]
        on_sale = books.on_sale_per_producer
        producer_ids = [a.ident for a in self._agents if a.role == "producer"]
        timeline.samples.append(
            Sample(
                t=elapsed,
                bought=self.report.products_bought,
                orders=len(self.report.orders),
                consumers_done=sum(a.done for a in consumers),
                on_sale_per_producer=tuple(
                    on_sale[i] if i is not None and i < len(on_sale) else 0 for i in producer_ids
                ),
                waiting_consumers=books.waiting_consumers,
                waiting_producers=books.waiting_producers,
            )
        )
        self.observer.on_sample(timeline)
        if self.audit:
            self.report.violations += [f"at {elapsed:.2f} s: {p}" for p in self._market.audit()]
        if final:
            return
        progress = (books.ordered, books.in_carts)
        now = time.monotonic()
        if progress != self._progress[0]:
            self._progress = (progress, now)
        elif now - self._progress[1] >= self.stall_timeout:
            raise StallError(self._explain_stall(now - self._progress[1]))

    def _explain_stall(self, stalled_s: float) -> list[str]:
        assert self._market is not None
        waiting = self._market.waits()
        consumers = {a.ident: a.name for a in self._agents if a.role == "consumer"}
        producers = {a.ident: a.name for a in self._agents if a.role == "producer"}
        specs = {spec.name: spec for spec in self.workload.consumers}
        remaining: dict[str, list[Op]] = {
            a.name: [op for session in specs[a.name].sessions[a.orders :] for op in session]
            for a in self._agents
            if a.role == "consumer" and not a.done
        }
        report = diagnose(waiting, self.workload, consumers, producers, remaining, stalled_s)
        header = (
            f"stalled: no consumer made progress for {stalled_s:.1f} s "
            f"(--stall-timeout {self.stall_timeout:g})"
        )
        return [header, *report.explain()[1:]]

    def _next_messages(self, timeout: float | None) -> list[tuple[_Agent, tuple[Any, ...]]]:
        """Wait for pipes and sentinels; return messages, deaths as ("died", how).

        A process that ends takes every unfinished agent of its with it. A
        local server's death raises MarketLostError at once.
        """
        handles: list[Any] = [channel for channel in self._by_channel if not channel.closed]
        server = self._manager._process if self._manager is not None else None
        if server is not None:
            handles.append(server.sentinel)
        messages: list[tuple[_Agent, tuple[Any, ...]]] = []
        for handle in connection.wait(handles, timeout):
            agents = self._by_channel.get(handle)
            if agents is None:
                assert server is not None
                server.join(SERVER_DEATH_GRACE)  # its sentinel can come before its status
                raise MarketLostError(f"the market server died ({_how_it_ended(server)})")
            received, ended = self._read_pipe(handle)
            for agent, message in received:
                if message[0] in ("done", "closed", "failed"):
                    agent.done = True
                messages.append((agent, message))
            if ended and not all(agent.done for agent in agents):
                agents[0].process.join(TERMINATE_GRACE)
                how = _how_it_ended(agents[0].process)
                for agent in agents:
                    if not agent.done:
                        agent.done = True
                        messages.append((agent, ("died", how)))
        return messages

    def _read_pipe(
        self, channel: connection.Connection
    ) -> tuple[list[tuple[_Agent, tuple[Any, ...]]], bool]:
        """What waits in a process's pipe, by agent, stats kept; True once it ended."""
        agents = self._by_channel[channel]
        messages = []
        try:
            while channel.poll():
                slot, *message = channel.recv()
                agent = agents[slot]
                if message[0] in ("done", "stats") and len(message) > 1:
                    agent.stats = message[1]
                messages.append((agent, tuple(message)))
        except (EOFError, OSError):
            channel.close()
            return messages, True
        return messages, False

    def _record_order(self, agent: _Agent, products: list[Product]) -> None:
        agent.orders += 1
        self.report.orders.append((agent.name, products))
        self.observer.on_order(agent.name, products)

    def _shutdown(self) -> None:
        """Close the market, stop the agents, stop the server: every step bounded.

        A --connect run closes the market only when asked to and done, and
        gives its producers a per-try wait more to notice the stop.
        """
        own_market = self.connect is None
        if self.report.market_lost and self._manager is not None:
            # Dead or frozen: a shutdown request would wait on it forever.
            with contextlib.suppress(OSError):
                self._manager._process.kill()
            self._market = None
        if self._market is not None:
            try:
                if own_market or (self.close_market and self._finished):
                    self._market.close()
                # After the close: a publish between the two would be missing
                # from the books but in its producer's count.
                self.report.books = self._market.books()
            except MpmarketError:
                pass
        self._stop.set()
        self._start.set()  # agents still at the barrier see the stop
        self._drain(STOP_GRACE if own_market else STOP_GRACE + WAIT_PER_TRY)
        stop_processes(self._processes(), 0.0, TERMINATE_GRACE)
        for channel in self._by_channel:
            channel.close()
        if self._market is not None:
            self._market.disconnect()
        if self._manager is not None:
            with contextlib.suppress(OSError, EOFError, MarketUnavailableError):
                self._manager.shutdown()

    def _kill_everything(self) -> None:
        """The second Ctrl-C: no grace for anyone."""
        processes = self._processes()
        for process in processes:
            if process.exitcode is None:
                process.kill()
        join_all(processes, TERMINATE_GRACE)
        if self._manager is not None and self._manager._process.exitcode is None:
            self._manager._process.kill()
            self._manager._process.join(TERMINATE_GRACE)

    def _drain(self, timeout: float) -> None:
        """Join the agents for up to ``timeout``, still recording their orders.

        A stopped consumer of a --connect run finishes the add it is in and
        may order it: what was bought is printed, not lost.
        """
        deadline = time.monotonic() + timeout
        while True:
            handles: list[Any] = [channel for channel in self._by_channel if not channel.closed]
            handles += [p.sentinel for p in self._processes() if p.exitcode is None]
            remaining = deadline - time.monotonic()
            if not handles or remaining <= 0:
                return
            for handle in connection.wait(handles, remaining):
                if handle not in self._by_channel:
                    continue  # a sentinel: its pipe reports the end
                for agent, message in self._read_pipe(handle)[0]:
                    if message[0] == "order":
                        self._record_order(agent, message[1])


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _how_it_ended(process: ChildProcess | None) -> str:
    code = process.exitcode if process is not None else None
    if code is not None and code < 0:
        return f"killed by {signal.Signals(-code).name}"
    if code is None:
        return "stopped answering"
    return f"exited with code {code}"
