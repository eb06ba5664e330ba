"""Workloads: who produces what, who buys what, and the market's settings.

Three sources give the same frozen ``Workload``:

- the course's JSON format (``mpmarket.core.load.load_course_json``), as in
  the course's cases;
- mpmarket's own TOML format (``mpmarket.core.load.load_toml``), documented in
  docs/workloads.md;
- a seeded generator (``mpmarket.core.generate.generate``) that never deadlocks.

This module holds the data (the specs, ``Op``, ``Workload``) and what a run
checks against it (``purchase_line``, ``expected_purchases``,
``verify_orders``); ``mpmarket.core.dump`` writes a workload back. Everything
here is pure data: no processes, no market.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Literal

from mpmarket.products import Product

__all__ = [
    "ConsumerSpec",
    "Op",
    "ProducerSpec",
    "ProductionStep",
    "Workload",
    "expected_purchases",
    "purchase_line",
    "verify_orders",
]

DEFAULT_QUEUE_SIZE = 15


@dataclass(frozen=True)
class ProductionStep:
    """Make ``quantity`` units of ``product``, ``make_time`` seconds each."""

    product: Product
    quantity: int
    make_time: float


@dataclass(frozen=True)
class ProducerSpec:
    """A producer cycles forever over its steps."""

    name: str
    steps: tuple[ProductionStep, ...]
    republish_wait_time: float


@dataclass(frozen=True)
class Op:
    """One operation of a shopping session: add or remove ``quantity`` units."""

    action: Literal["add", "remove"]
    product: Product
    quantity: int


@dataclass(frozen=True)
class ConsumerSpec:
    """A consumer runs its sessions in order, placing an order after each."""

    name: str
    retry_wait_time: float
    sessions: tuple[tuple[Op, ...], ...]


@dataclass(frozen=True)
class Workload:
    """A whole run's worth of agents and the market's settings."""

    producers: tuple[ProducerSpec, ...]
    consumers: tuple[ConsumerSpec, ...]
    queue_size_per_producer: int
    source: str = "<generated>"

    @property
    def products_to_buy(self) -> int:
        return sum(expected_purchases(self).values())

    @property
    def sessions(self) -> int:
        return sum(len(consumer.sessions) for consumer in self.consumers)


def purchase_line(consumer: str, product: Product) -> str:
    """The output line for one bought unit, as the course prints it."""
    return f"{consumer} bought {product!r}"


def session_purchases(session: tuple[Op, ...]) -> Counter[Product]:
    """What one session buys: adds minus the removes that found a unit."""
    cart: Counter[Product] = Counter()
    for op in session:
        if op.action == "add":
            cart[op.product] += op.quantity
        else:
            cart[op.product] -= min(op.quantity, cart[op.product])
    return +cart


def expected_purchases(workload: Workload) -> Counter[str]:
    """The multiset of output lines that any correct run prints."""
    lines: Counter[str] = Counter()
    for consumer in workload.consumers:
        for session in consumer.sessions:
            for product, count in session_purchases(session).items():
                lines[purchase_line(consumer.name, product)] += count
    return lines


def verify_orders(workload: Workload, orders: list[tuple[str, list[Product]]]) -> list[str]:
    """Check each consumer's orders against its sessions, in order.

    The n-th order of a consumer must hold exactly what its n-th session adds
    minus what it removes. A consumer that died may have fewer orders, never
    different ones. Returns the violations (empty when all is well).
    """
    sessions = {spec.name: spec.sessions for spec in workload.consumers}
    placed: dict[str, int] = {}
    problems = []
    for consumer, products in orders:
        number = placed.get(consumer, 0)
        placed[consumer] = number + 1
        expected_sessions = sessions.get(consumer, ())
        if number >= len(expected_sessions):
            problems.append(
                f"{consumer} placed order {number + 1} but has {len(expected_sessions)} sessions"
            )
            continue
        expected = session_purchases(expected_sessions[number])
        if Counter(products) != expected:
            problems.append(
                f"{consumer}'s order {number + 1} holds {sorted(map(repr, products))}, "
                f"expected {sorted(map(repr, expected.elements()))}"
            )
    return problems
