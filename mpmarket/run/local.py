"""A local run: the server, a process per agent, orders collected as they come.

::

    LocalRun.run()                        (local.py: the facade)
      │ RunMarket.attach() (market.py): start_server() ──> server process (Marketplace)
      │ AgentFleet.spawn() (fleet.py) ──> agent.process_main(): connect(), register / new_cart
      │ <── pipe Ready(slot, cart or producer id)    │
      │ all ready: AgentFleet.release() ───>         │ produce() / consume()
      │ <── pipe Order(slot, products) ──────        │   through a MarketProxy
      │ <── pipe Done(slot, stats) / Failed(slot, why)
      │ MarketWatch.sample() (watch.py) every SAMPLE_INTERVAL_S: timeline, audit, stall
      │ last consumer done: RunMarket: market.close(), books; AgentFleet.stop()
      │ join agents, bounded: join, terminate, kill; RunMarket.shutdown()
      └─> RunReport

The pieces: ``plan`` picks and packs the agents and sets the stall timeout;
``messages`` holds what crosses the pipes (small frozen classes, encoded in
one place); ``agent`` is the agent process's side; ``fleet`` (``AgentFleet``)
starts the agent processes, waits on every pipe and every sentinel at once,
knows each agent's state and stops them, every step bounded; ``watch``
(``MarketWatch``) samples the market; ``market`` (``RunMarket``) starts the
server (or finds the one to ``--connect`` to), attaches the runner, and at
the end closes it, takes the books and shuts it down, every call bounded.
``LocalRun`` drives them: the start, the orders, the shutdown, the report.

With ``agents_per_process`` N > 1, up to N agents of one role share a
process, a thread and a connection each; their messages carry their place in
the process, and a process that dies is the death of each agent of it that
had not finished.

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

Stops asked from outside. A signal (SIGINT, SIGTERM, SIGHUP) or a request
(the CLI's stdout lost) is recorded by ``interrupts`` (``proc.interrupts``,
the one the command installed) and looked at where stopping is safe: between
two agent processes started, in every wait (its wake-up pipe ends the wait),
before any pipe is read; only the connect, which nothing can wake, is
interrupted where it is. The stop is then the orderly shutdown; a second
signal makes it kill at once. The server starts with SIGINT and SIGHUP
blocked, so that a Ctrl-C or a hang-up sent to the whole process group
leaves it to its runner.
"""

from __future__ import annotations

import contextlib
import hashlib
import signal
import time

from mpmarket.core.agents import WAIT_PER_TRY
from mpmarket.core.dump import dump_toml
from mpmarket.core.workload import Workload, verify_orders
from mpmarket.errors import (
    MarketLostError,
    MarketUnavailableError,
    MpmarketError,
    RunError,
    StallError,
)
from mpmarket.net.classic import ClassicProxy
from mpmarket.net.client import ATTACH_TIMEOUT, MarketProxy
from mpmarket.net.oplog import LogSettings
from mpmarket.net.wire import Address, format_address
from mpmarket.proc.context import process_context
from mpmarket.proc.interrupts import Interrupts
from mpmarket.proc.lifeline import STOP_GRACE
from mpmarket.proc.limits import ensure_open_files, open_files_needed
from mpmarket.products import Product
from mpmarket.run.fleet import SERVER_DEATH_GRACE, AgentFleet, AgentState, server_died
from mpmarket.run.market import MARKETS, RunMarket
from mpmarket.run.messages import Closed, Died, Done, Failed, Order
from mpmarket.run.plan import default_stall_timeout, pack_agents
from mpmarket.run.report import AgentDeath, RunObserver, RunReport, utc_now
from mpmarket.run.timeline import SAMPLE_INTERVAL_S
from mpmarket.run.trace import TRACE_STOP_GRACE, TraceRecording
from mpmarket.run.watch import MarketWatch

__all__ = ["MARKETS", "LocalRun"]


class LocalRun:
    """Run a workload on this machine: server, agents, orders, shutdown.

    ``run()`` always leaves no process behind, whatever happens inside it.

    With ``connect`` (an address) and ``authkey``, no server is started: the
    agents attach to that market, the runner first trying for
    ``connect_timeout`` seconds; ``close_market`` closes it once this run's
    consumers are done. See the module docstring.

    ``market="classic"`` runs the workload on the course's design instead
    (``mpmarket.net.classic``): a stock manager server, agents that sleep
    their waits; not with ``connect``.

    ``interrupts``: where a stop is asked; by default the one installed
    (``Interrupts.installed()``), else Python's own KeyboardInterrupt.
    ``trace``: the report gets the run's trace (``run.trace``, ``--trace``).
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
        market: str = "mpmarket",
        interrupts: Interrupts | None = None,
        trace: bool = False,
    ) -> None:
        if connect is not None and authkey is None:
            raise ValueError("connect needs the market's authkey")
        if agents_per_process < 1:
            raise ValueError(f"agents_per_process must be at least 1, got {agents_per_process}")
        if market not in MARKETS:
            raise ValueError(f"market must be one of {', '.join(MARKETS)}, got {market!r}")
        if market != "mpmarket" and connect is not None:
            raise ValueError(f"the {market} market runs only with its own server, not connect")
        self.market = market
        self.workload = workload
        self.observer = observer or RunObserver()
        self.ctx = process_context(start_method)
        own_log = connect is None and market == "mpmarket"  # --trace: hand-overs logged
        self._trace = TraceRecording(log, server_log=own_log) if trace else None
        self.log = self._trace.log if self._trace is not None else log
        self.started_at = time.perf_counter() if started_at is None else started_at
        self.connect = connect
        self.connect_timeout = connect_timeout
        self.close_market = close_market
        self.fail_fast = fail_fast
        self.stall_timeout = (
            default_stall_timeout(workload) if stall_timeout is None else stall_timeout
        )
        self.deadline_s = deadline_s
        self.kills = sorted(kills)
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
        if market != "mpmarket":  # the default's report stays as it was
            self.report.settings["market"] = market
        self._watch = MarketWatch(
            workload, self.report, self.observer, stall_timeout=self.stall_timeout, audit=audit
        )
        self.interrupts = interrupts or Interrupts.installed() or Interrupts()
        self._run_market = RunMarket(
            self.report,
            ctx=self.ctx,
            interrupts=self.interrupts,
            queue_size_per_producer=workload.queue_size_per_producer,
            log=self.log,
            market=market,
            connect=connect,
            authkey=authkey,
            connect_timeout=connect_timeout,
        )
        self._fleet = AgentFleet(self.ctx, self.interrupts, market=market, trace=trace)

    def run(self) -> RunReport:
        """Run to the end (or the first failure); a stop asked is reported."""
        with self.interrupts.deferred():
            return self._run()

    def _run(self) -> RunReport:
        report = self.report
        report.started_utc = utc_now()
        market_started = shutdown_started = None
        try:
            self.interrupts.check()
            packs = pack_agents(self.workload, self.agents_per_process)
            ensure_open_files(  # ulimit -n raised to what the run needs (said), or refused
                open_files_needed(len(packs), sum(map(len, packs)), self.agents_per_process)
            )
            address, authkey = self._run_market.attach()
            self._fleet.spawn(self.workload, self.agents_per_process, address, authkey)
            self._fleet.wait_ready(self._run_market.server())
            market_started = time.perf_counter()
            report.startup_s = market_started - self.started_at
            if self._trace is not None:
                self._trace.zero_ns = time.monotonic_ns()
            self._fleet.release()
            self.observer.on_started(report.producers, report.consumers)
            self._collect_orders()
            self._finished = True
            assert self._market is not None
            elapsed = time.perf_counter() - market_started
            self._sample(elapsed, final=True)
        except KeyboardInterrupt:
            # A signal, or Python's own KeyboardInterrupt (no reason recorded);
            # not a request (stdout lost), unless a signal came too.
            report.interrupted = self.interrupts.signalled or not self.interrupts.stopping
            report.stopped_by = self.interrupts.reason or "SIGINT"
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
            if self.interrupts.signalled and not report.interrupted:  # during the shutdown
                report.interrupted = True
                report.stopped_by = signal.Signals(self.interrupts.signals[0]).name
            report.violations += verify_orders(self.workload, report.orders)
            sold = report.books.sold_per_producer if report.books is not None else ()
            report.agents = self._fleet.stats(sold)
            report.ended_utc = utc_now()
            ended = time.perf_counter()
            report.shutdown_s = ended - shutdown_started
            report.wall_s = ended - self.started_at
        # After the timings: a big workload takes a moment to write out.
        report.workload_digest = hashlib.sha256(dump_toml(self.workload).encode()).hexdigest()
        if self._trace is not None:  # so are many spans, merged
            report.trace = self._trace.build(self._fleet.agents, report.timeline, report.source)
        return report

    # -- phases --------------------------------------------------------------

    @property
    def _market(self) -> MarketProxy | ClassicProxy | None:
        """The runner's own connection to the market (``RunMarket.proxy``)."""
        return self._run_market.proxy

    def _collect_orders(self) -> None:
        """Until every consumer is done; with --connect and none, every producer.

        Wakes for each message, for each death, and every sample interval to
        sample the market, check for a stall, and run the kill schedule.
        """
        agents = self._fleet.agents
        consumers_left = sum(agent.role == "consumer" for agent in agents)
        producers_left = len(agents) - consumers_left
        if consumers_left or self.connect is None:
            producers_left = 0  # they are stopped once the consumers are done
        began = time.monotonic()
        if self._trace is not None:
            self._trace.timeline_zero_ns = int(began * 1e9)
        self._watch.start(began)
        next_sample = began
        kills = list(self.kills)
        while consumers_left or producers_left:
            now = time.monotonic()
            if now >= next_sample:
                self._sample(now - began)
                next_sample = now + SAMPLE_INTERVAL_S
            while kills and now - began >= kills[0][0]:
                self._fleet.kill(kills.pop(0)[1])
            if self.deadline_s is not None and now - began >= self.deadline_s:
                self.report.cut_short = True
                return
            wake = next_sample
            if kills:
                wake = min(wake, began + kills[0][0])
            if self.deadline_s is not None:
                wake = min(wake, began + self.deadline_s)
            timeout = max(0.0, wake - time.monotonic())
            for agent, message in self._fleet.next_messages(timeout, self._run_market.server()):
                match message:
                    case Order(products=products):
                        self._record_order(agent, products)
                    case Done():
                        consumers_left -= 1
                        self.observer.on_consumer_done(agent.name)
                    case Closed():
                        producers_left = max(producers_left - 1, 0)
                        self.observer.on_producer_closed(agent.name)
                    case Failed() | Died():
                        self._lost_agent(agent, message)
                        if agent.role == "consumer":
                            consumers_left -= 1
                        else:
                            producers_left = max(producers_left - 1, 0)

    def _sample(self, elapsed: float, *, final: bool = False) -> None:
        """Look at the market (``MarketWatch``); a stop asked cuts the calls short.

        A call to a frozen server may wait seconds for its answer, so a
        signal raises there at once; the connection of a call cut in two is
        out of step and is dropped (the shutdown opens a new one).
        """
        assert self._market is not None
        try:
            with self.interrupts.interruptible():
                self._watch.sample(self._market, self._fleet.agents, elapsed, final=final)
        except KeyboardInterrupt:
            self._market.disconnect()
            raise

    def _lost_agent(self, agent: AgentState, end: Failed | Died) -> None:
        """An agent died or failed: give its cart back, report it, go on (or not).

        An agent that lost the market may be the first to see the server die:
        its sentinel can come later than the agent's word (under forkserver
        the fork server relays it), so the server gets a moment to be seen.
        """
        server = self._run_market.server()
        if isinstance(end, Failed) and end.market_lost and server is not None:
            server.join(SERVER_DEATH_GRACE)
            if server.exitcode is not None:
                raise server_died(server)
        how = end.why if isinstance(end, Failed) else end.how
        released = 0
        if agent.role == "consumer" and agent.ident is not None and self._market is not None:
            with contextlib.suppress(MpmarketError):
                released = self._market.release_cart(agent.ident)
        death = AgentDeath(agent.name, agent.role, how, agent.orders, agent.sessions, released)
        self.report.deaths.append(death)
        self.observer.on_agent_died(death)
        if self.fail_fast:
            raise RunError(death.describe())

    def agent_processes(self, *, alive: bool = True) -> dict[int, int]:
        """The agent processes started: pid -> how many agents it runs (for memory figures)."""
        return self._fleet.agent_processes(alive=alive)

    def _record_order(self, agent: AgentState, products: list[Product]) -> None:
        agent.orders += 1
        self.report.orders.append((agent.name, products))
        self.observer.on_order(agent.name, products)

    def _shutdown(self) -> None:
        """Close the market, stop the agents, stop the server: every step bounded.

        A --connect run closes the market only when asked to and done, and
        gives its producers a per-try wait more to notice the stop.
        """
        own_market = self.connect is None
        if self.interrupts.hurry:  # a second Ctrl-C before the shutdown began
            self._kill_everything()
            self._run_market.proxy = None
        self._run_market.close_and_take_books(
            close=own_market or (self.close_market and self._finished)
        )
        # A stopped consumer of a --connect run finishes the add it is in and
        # may order it: what was bought is printed, not lost.
        grace = STOP_GRACE if own_market else STOP_GRACE + WAIT_PER_TRY
        if self._trace is not None:  # each agent sends its spans as it ends
            grace += TRACE_STOP_GRACE
        self._fleet.stop(grace, self._record_order)
        self._run_market.disconnect()
        if self.interrupts.hurry:
            self._kill_everything()
        self._run_market.shutdown()  # at once if the server was killed

    def _kill_everything(self) -> None:
        """The second Ctrl-C: no grace for anyone (safe to call twice)."""
        self._fleet.kill_all()
        self._run_market.kill_server()
