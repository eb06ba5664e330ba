"""MarketWatch: a run's look at its market, every ``SAMPLE_INTERVAL_S``.

Each look adds a sample to the run's timeline, audits the books (when asked)
and checks for a stall: when no consumer makes progress for
``stall_timeout`` seconds, it raises StallError that explains who waits for
what (``stall.diagnose``), and first names the agents that cannot move at
all: a process stopped (SIGSTOP, a debugger) or no longer running.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import psutil

from mpmarket.core.stall import diagnose
from mpmarket.core.workload import Op, Workload
from mpmarket.errors import StallError
from mpmarket.net.classic import ClassicProxy
from mpmarket.net.client import MarketProxy
from mpmarket.run.fleet import AgentState
from mpmarket.run.report import RunObserver, RunReport
from mpmarket.run.timeline import Sample, Timeline

__all__ = ["MarketWatch", "process_state"]

# psutil's names of a process that is there but does nothing, and of one
# that is not running any more (/proc/PID/stat states T, t, Z, X).
_STOPPED = {
    psutil.STATUS_STOPPED: "stopped (SIGSTOP or SIGTSTP); it does nothing until SIGCONT",
    psutil.STATUS_TRACING_STOP: "stopped by a debugger or tracer",
}
_GONE = (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)


def process_state(pid: int | None) -> str | None:
    """Why the process ``pid`` makes no progress, or None: it runs (or waits)."""
    if pid is None:
        return None
    try:
        status = psutil.Process(pid).status()
    except psutil.NoSuchProcess:
        return "not running (its process is gone)"
    except psutil.Error:  # not ours to look at: say nothing rather than guess
        return None
    if status in _STOPPED:
        return _STOPPED[status]
    if status in _GONE:
        return f"not running (its process is a {status} that has not been reaped)"
    return None


class MarketWatch:
    """Samples, audit and stall check of one run, written into its report."""

    def __init__(
        self,
        workload: Workload,
        report: RunReport,
        observer: RunObserver,
        *,
        stall_timeout: float,
        audit: bool,
    ) -> None:
        self.workload = workload
        self.report = report
        self.observer = observer
        self.stall_timeout = stall_timeout
        self.audit = audit
        self.report.timeline = Timeline(
            producers=tuple(spec.name for spec in workload.producers),
            consumers=tuple(spec.name for spec in workload.consumers),
            queue_size_per_producer=workload.queue_size_per_producer,
            products_to_buy=workload.products_to_buy,
            sessions_to_run=workload.sessions,
        )
        self._progress: tuple[tuple[int, int] | None, float] = (None, time.monotonic())

    def start(self, now: float) -> None:
        """Progress is counted from ``now`` (a monotonic time)."""
        self._progress = (None, now)

    def sample(
        self,
        market: MarketProxy | ClassicProxy,
        agents: Sequence[AgentState],
        elapsed: float,
        *,
        final: bool = False,
    ) -> None:
        """Look at the market: timeline, audit, and (but for the last) the stall check."""
        assert self.report.timeline is not None
        books = market.books()
        timeline = self.report.timeline
        consumers = [a for a in agents if a.role == "consumer"]
        on_sale = books.on_sale_per_producer
        producer_ids = [a.ident for a in agents if a.role == "producer"]
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
            self.report.violations += [f"at {elapsed:.2f} s: {p}" for p in market.audit()]
        if final:
            return
        progress = (books.ordered, books.in_carts)
        now = time.monotonic()
        if progress != self._progress[0]:
            self._progress = (progress, now)
        elif now - self._progress[1] >= self.stall_timeout:
            raise StallError(self._explain_stall(market, agents, now - self._progress[1]))

    def _explain_stall(
        self, market: MarketProxy | ClassicProxy, agents: Sequence[AgentState], stalled_s: float
    ) -> list[str]:
        waiting = market.waits()
        ids = [(a.ident, a) for a in agents if a.ident is not None]  # all, once started
        consumers = {ident: a.name for ident, a in ids if a.role == "consumer"}
        producers = {ident: a.name for ident, a in ids if a.role == "producer"}
        specs = {spec.name: spec for spec in self.workload.consumers}
        remaining: dict[str, list[Op]] = {
            a.name: [op for session in specs[a.name].sessions[a.orders :] for op in session]
            for a in agents
            if a.role == "consumer" and not a.done
        }
        report = diagnose(waiting, self.workload, consumers, producers, remaining, stalled_s)
        header = (
            f"stalled: no consumer made progress for {stalled_s:.1f} s "
            f"(--stall-timeout {self.stall_timeout:g})"
        )
        return [header, *self._stuck_agents(agents), *report.explain()[1:]]

    def _stuck_agents(self, agents: Sequence[AgentState]) -> list[str]:
        """A line per agent whose process is stopped or not running, in workload order."""
        lines = []
        dead = {death.name: death.how for death in self.report.deaths}
        for agent in agents:
            if agent.name in dead:
                lines.append(f"{agent.role} {agent.name} is not running ({dead[agent.name]})")
                continue
            if agent.done:  # finished: nothing more was asked of it
                continue
            state = process_state(agent.process.pid)
            if state is not None:
                lines.append(f"{agent.role} {agent.name} (pid {agent.process.pid}) is {state}")
        return lines
