"""What a run did and what it tells as it goes: ``RunReport``, ``AgentDeath``, ``RunObserver``."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mpmarket.core.books import MarketBooks
from mpmarket.products import Product
from mpmarket.run.timeline import Timeline

__all__ = ["AgentDeath", "RunObserver", "RunReport", "utc_now"]


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

    def on_agent_died(self, death: AgentDeath) -> None:
        """An agent process died or failed; the run goes on without it."""

    def on_sample(self, timeline: Timeline) -> None:
        """A new sample of the market (a few per second)."""


@dataclass(frozen=True)
class AgentDeath:
    """An agent that did not finish: who, how, and what it left."""

    name: str
    role: str
    how: str
    sessions_done: int = 0
    sessions: int = 0
    released: int = 0  # units of its cart put back on sale

    def describe(self) -> str:
        text = f"{self.role} {self.name} {self.how}"
        if self.role == "consumer":
            text += f" after {self.sessions_done} of {self.sessions} sessions"
            text += f"; {self.released} products of its cart went back on sale"
        return text


@dataclass
class RunReport:
    """What a run did: its orders, its timings, and whatever went wrong."""

    source: str
    producers: int
    consumers: int
    orders: list[tuple[str, list[Product]]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    interrupted: bool = False  # a signal (SIGINT, SIGTERM, SIGHUP) stopped it
    # What stopped it before its end: the signal's name, or "stdout" (its
    # reader went away, or it could not be written); None if nothing did.
    stopped_by: str | None = None
    attach_failed: bool = False  # the market could not be reached or refused us
    market_lost: bool = False  # the server died or stopped answering mid-run
    deaths: list[AgentDeath] = field(default_factory=list)
    stall: list[str] = field(default_factory=list)  # the explanation of a stall
    violations: list[str] = field(default_factory=list)  # broken invariants
    cut_short: bool = False  # stopped at its deadline (stress)
    agents: list[dict[str, Any]] = field(default_factory=list)  # name, role, AgentStats
    started_utc: str = ""
    ended_utc: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    workload_digest: str = ""  # sha256 of the workload in canonical TOML
    timeline: Timeline | None = None
    trace: dict[str, Any] | None = None  # --trace: the Trace Event document (run.trace)
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
        return not (
            self.failures or self.interrupted or self.deaths or self.stall or self.violations
        )


def utc_now() -> str:
    """The time now as a report gives it: UTC, in milliseconds, ``Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
