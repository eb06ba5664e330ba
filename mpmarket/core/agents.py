"""The producer and consumer loops, written against the ``Market`` protocol.

They run the same in a thread against a plain ``Marketplace`` (fast tests) and
in a process against a ``MarketProxy`` (the real thing). They never print:
a consumer hands each order to ``deliver``.

Waiting is done by the market: ``publish`` and ``add_many`` answer only when a
slot or a product appears or the per-try wait passes (the server parks the
call, no thread of it waits), so the loops below never sleep to poll. The only
sleep is a producer's make time.

Given a ``tracing.Recorder`` (``--trace``), they record each call, make time,
session and order as a span; without one they pay one ``is not None`` test
per call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from mpmarket.core.books import Market
from mpmarket.core.tracing import Recorder, now_ns
from mpmarket.core.workload import ConsumerSpec, ProducerSpec
from mpmarket.products import Product

__all__ = [
    "MAX_CATCH_UP_S",
    "QUICK_CALL_S",
    "WAIT_PER_TRY",
    "AgentStats",
    "StopSignal",
    "consume",
    "make_due",
    "produce",
]

# The shortest per-try wait of a blocking call (the workload's retry and
# republish times count when longer). The market wakes a waiter the moment it
# can proceed, so the length of a try changes no result: it bounds how long a
# stop goes unnoticed when nobody closes the market. A try that times out keeps
# its place in line for the retry (``market.LAPSE_GRACE_S``); before that, it
# rejoined the queue of waiters at its end, and with tries as long as the
# course's retry times (0.1-0.5 s) course case 07 took 13.2 s against its
# simulated ideal of 11.6 s (with 2 s tries, 11.6 s but 12.0-13.5 s one run in
# two: the waits longer than a try). Long tries still save round trips. A
# workload's wait of 0 (the classic design then spins) is covered too.
WAIT_PER_TRY = 2.0


# A blocking call that returns within this long did not wait: it found its
# slot or its products at once (a round trip takes well under a millisecond).
# Longer calls count as time blocked (producers) or waiting (consumers).
QUICK_CALL_S = 0.002


# How much of its lateness a producer makes up. Each make ends at a due time
# counted from when the last one was due, not from when the producer woke
# (``produce``), so the sleeps' lateness and the publish round trips do not
# add up unit after unit; a producer later than this (descheduled on a loaded
# machine) makes up this much, not everything it owes in a burst.
MAX_CATCH_UP_S = 0.005


@dataclass
class AgentStats:
    """What an agent did, filled in as it goes, for the run's summary."""

    published: int = 0  # producer: units published
    blocked_s: float = 0.0  # producer: time in publish calls that met a full queue
    sessions: int = 0  # consumer: sessions completed (orders placed)
    bought: int = 0  # consumer: products in its orders
    waiting_s: float = 0.0  # consumer: time in add calls that waited for products


class StopSignal(Protocol):
    """``threading.Event`` and ``multiprocessing.Event`` both fit."""

    def is_set(self) -> bool: ...
    def wait(self, timeout: float | None = None) -> bool: ...


def _no_op(_ident: int) -> None:
    return None


def make_due(due: int | None, started: int, ended: int, queued: bool, make_ns: int) -> int:
    """When the make of a unit just published ends (monotonic ns).

    It starts when the unit went on sale: when the last make was ``due``, for
    a publish whose last try ``started`` late by up to ``MAX_CATCH_UP_S``
    and that met no full queue; ``MAX_CATCH_UP_S`` before ``started`` when
    later than that; when the publish ``ended``, if it ``queued`` (met a full
    queue or waited for a slot) or for the first unit.
    """
    if queued or due is None:
        return ended + make_ns
    return max(due, started - int(MAX_CATCH_UP_S * 1e9)) + make_ns


def produce(
    market: Market,
    spec: ProducerSpec,
    stop: StopSignal,
    ready: Callable[[int], None] = _no_op,
    stats: AgentStats | None = None,
    trace: Recorder | None = None,
    *,
    keep_schedule: bool = True,
) -> int:
    """Register, call ``ready(producer_id)``, then cycle over the steps until ``stop``.

    Each unit is published (each try waiting in the market for a free slot,
    again and again while refused), then the make time is spent. Returns how many
    units were published; ``stats``, if given, is kept up to date.

    The make of a unit starts when it went on sale, as in the simulated
    ideal: when the last make was due if the publish was quick (the call's
    round trip and the sleep's lateness are not making time), else when the
    blocked publish returned. So a producer of 1 ms units makes a thousand
    a second, not one per millisecond plus a round trip plus a wake-up
    (``MAX_CATCH_UP_S`` bounds what it makes up for). ``keep_schedule=False``
    is the course's producer, kept for the classic reference: it sleeps the
    make time after each publish returns.
    """
    stats = stats if stats is not None else AgentStats()
    producer_id = market.register_producer()
    ready(producer_id)
    wait = max(spec.republish_wait_time, WAIT_PER_TRY)
    if not any(step.quantity for step in spec.steps):
        stop.wait()
        return stats.published
    due: int | None = None  # when the last make was due to end (ns, monotonic)
    while not stop.is_set():
        for step in spec.steps:
            for _ in range(step.quantity):
                queued = False  # a try met a full queue, or waited for a slot
                while True:
                    started = now_ns()
                    published = market.publish(producer_id, step.product, wait)
                    ended = now_ns()
                    took = (ended - started) / 1e9
                    blocked = took > QUICK_CALL_S or not published
                    if blocked:
                        stats.blocked_s += took
                        queued = True
                    if trace is not None:
                        name = "publish blocked" if blocked else "publish"
                        name = name if published else "publish refused"
                        trace.span(name, started, ended, step.product.name)
                    if published:
                        break
                    if stop.is_set():
                        return stats.published
                stats.published += 1
                make_ns = int(step.make_time * 1e9)
                due = make_due(due, started, ended, queued, make_ns) if keep_schedule else None
                if step.make_time:
                    started = now_ns()
                    stopped = stop.wait((make_ns if due is None else max(0, due - started)) / 1e9)
                    if trace is not None:
                        trace.span("make", started, now_ns(), step.product.name)
                    if stopped:
                        return stats.published
    return stats.published


def consume(
    market: Market,
    spec: ConsumerSpec,
    deliver: Callable[[str, list[Product]], None],
    stop: StopSignal,
    ready: Callable[[int], None] = _no_op,
    stats: AgentStats | None = None,
    trace: Recorder | None = None,
) -> int:
    """Get a cart, call ``ready(cart_id)``, run every session and deliver each order.

    An add of ``quantity`` units is one call that waits in the market until
    they come (per try, ``WAIT_PER_TRY`` or the retry time if longer), tried
    again until all have come or ``stop`` is set.
    Returns the number of sessions completed; ``stats``, if given, is kept up
    to date.
    """
    stats = stats if stats is not None else AgentStats()
    cart_id = market.new_cart()
    ready(cart_id)
    wait = max(spec.retry_wait_time, WAIT_PER_TRY)
    for number, session in enumerate(spec.sessions):
        began = now_ns() if trace is not None else 0
        for op in session:
            if op.action == "remove":
                started = now_ns() if trace is not None else 0
                market.remove_many(cart_id, op.product, op.quantity)
                if trace is not None:
                    trace.span("remove", started, now_ns(), op.product.name)
                continue
            added = 0
            while added < op.quantity:
                started = now_ns()
                added += market.add_many(cart_id, op.product, op.quantity - added, wait)
                ended = now_ns()
                took = (ended - started) / 1e9
                waited = took > QUICK_CALL_S or added < op.quantity
                if waited:
                    stats.waiting_s += took
                if trace is not None:
                    trace.span("add waiting" if waited else "add", started, ended, op.product.name)
                if added < op.quantity and stop.is_set():
                    return number
        started = now_ns() if trace is not None else 0
        order = market.place_order(cart_id)
        if trace is not None:
            ended = now_ns()
            trace.span("order", started, ended, len(order))
            trace.span("session", began, ended, number)
        deliver(spec.name, order)
        stats.sessions += 1
        stats.bought += len(order)
    return len(spec.sessions)
