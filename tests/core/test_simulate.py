"""The simulator: makespans computed by hand, deadlock reports, and the proofs
that it agrees with ``expected_purchases`` on course cases and generated workloads.

Times in the hand-built workloads are binary fractions (0.25, 0.375, 0.5...)
so that the simulated sums are exact and the makespans compare with ``==``.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpmarket.core.generate import generate
from mpmarket.core.load import load_workload
from mpmarket.core.simulate import Deadlock, Stall, simulate
from mpmarket.core.workload import (
    ConsumerSpec,
    Op,
    ProducerSpec,
    ProductionStep,
    Workload,
    expected_purchases,
)
from mpmarket.products import Coffee, Tea

LINDEN = Tea("Linden", 9, "Herbal")
ARABICA = Coffee("Arabica", 3, 5.02, "LIGHT")
CONFORMANCE = Path(__file__).resolve().parents[3] / "shared" / "conformance"
COURSE_CASES = sorted(CONFORMANCE.glob("*.in")) if CONFORMANCE.is_dir() else []


def producer(name: str, *steps: tuple[object, int, float], wait: float = 0.375) -> ProducerSpec:
    return ProducerSpec(name, tuple(ProductionStep(*step) for step in steps), wait)  # type: ignore[arg-type]


def consumer(
    name: str, *sessions: list[tuple[str, object, int]], wait: float = 0.375
) -> ConsumerSpec:
    return ConsumerSpec(
        name,
        wait,
        tuple(tuple(Op(*op) for op in session) for session in sessions),  # type: ignore[arg-type]
    )


def workload(
    producers: list[ProducerSpec], consumers: list[ConsumerSpec], queue: int = 15
) -> Workload:
    return Workload(tuple(producers), tuple(consumers), queue)


def one_producer_one_consumer(retry: float = 0.375) -> Workload:
    return workload(
        [producer("prod1", (LINDEN, 1, 0.5))],
        [consumer("cons1", [("add", LINDEN, 2)], [("add", LINDEN, 1)], wait=retry)],
    )


# -- makespans by hand ---------------------------------------------------------


def test_consumer_waits_for_each_unit() -> None:
    # prod1 publishes Linden at 0, 0.5, 1.0 (publish, then 0.5 s to make the next).
    # cons1, session 1 (add 2): takes unit 1 at 0, waits, gets unit 2 at 0.5, orders.
    # Session 2 (add 1): waits, gets unit 3 at 1.0, orders: makespan 1.0, 3 published.
    result = simulate(one_producer_one_consumer())
    assert result.makespan == 1.0
    assert result.deadlock is None
    assert result.published == 3
    assert result.purchases == Counter({"cons1 bought " + repr(LINDEN): 3})


def test_blocked_producer_publishes_the_moment_a_slot_frees() -> None:
    # Queue size 1. prod1 publishes Arabica at 0 and 1.0; prod2 publishes Linden #1
    # at 0, then at 0.25 is refused (1 of 1 slots taken) and blocks.
    # cons1 takes Arabica #1 at 0 and waits for Arabica #2 until 1.0; then its add
    # of 3 Linden takes #1, which frees prod2's slot: prod2 publishes #2 at once
    # (1.0), which the same add takes; #3 comes one make time later: 1.0 + 0.25.
    result = simulate(
        workload(
            [producer("prod1", (ARABICA, 1, 1.0)), producer("prod2", (LINDEN, 1, 0.25))],
            [consumer("cons1", [("add", ARABICA, 2), ("add", LINDEN, 3)])],
            queue=1,
        )
    )
    assert result.makespan == 1.25
    assert result.published == 5  # Arabica at 0 and 1.0, Linden at 0, 1.0 and 1.25


def test_a_producer_above_its_cap_waits_for_a_slot_below_it() -> None:
    # Queue size 1. prod1 publishes Linden #1 at 0 and #2 at 0.25, blocks at 0.5
    # with #3; prod2 publishes Arabica #1..#4 at 0, 1.0, 2.0, 3.0, which go to
    # cons1, cons1, cons2, cons3 (waiting in that order from 0). At 1.0 cons1
    # puts Linden #1 back: prod1 has 2 on sale, above its cap. At 2.0 cons2 takes
    # #2: prod1 is still at its cap, so it stays blocked. At 3.0 cons3 takes #1
    # (prod1 below its cap: #3 is published and taken at once) and gets #4 at
    # 3.25. Were a slot freed at the cap, #3 would go on sale at 2.0 and #4 would
    # be made by 2.25: cons3 would be done at 3.0.
    result = simulate(
        workload(
            [producer("prod1", (LINDEN, 1, 0.25)), producer("prod2", (ARABICA, 1, 1.0))],
            [
                consumer("cons1", [("add", LINDEN, 1), ("add", ARABICA, 2), ("remove", LINDEN, 1)]),
                consumer("cons2", [("add", ARABICA, 1), ("add", LINDEN, 1)]),
                consumer("cons3", [("add", ARABICA, 1), ("add", LINDEN, 3)]),
            ],
            queue=1,
        )
    )
    assert result.makespan == 3.25
    assert result.published == 8  # Linden #1..#4, Arabica #1..#4


def test_waiting_consumer_woken_by_a_remove() -> None:
    # prod1 makes Linden every 10 s, prod2 Arabica every 1.0 s; both publish at 0.
    # cons1 takes Linden #1 and Arabica #1 at 0, then waits for Arabica #2.
    # cons2 waits for Linden from 0. At 1.0 cons1 gets Arabica #2 and removes
    # its Linden, which goes straight to cons2: both order at 1.0 (not 10.0).
    result = simulate(
        workload(
            [producer("prod1", (LINDEN, 1, 10.0)), producer("prod2", (ARABICA, 1, 1.0))],
            [
                consumer("cons1", [("add", LINDEN, 1), ("add", ARABICA, 2), ("remove", LINDEN, 1)]),
                consumer("cons2", [("add", LINDEN, 1)]),
            ],
        )
    )
    assert result.makespan == 1.0
    assert result.purchases == Counter(
        {"cons1 bought " + repr(ARABICA): 2, "cons2 bought " + repr(LINDEN): 1}
    )


def test_waiters_are_served_first_come_first_served() -> None:
    # Queue size 1. prod1 publishes Linden at 0, 1.0, 2.0; prod2 publishes Arabica
    # #1 at 0 and blocks at 0.25. cons0 takes Linden #1 at 0; cons1, then cons2,
    # wait for Linden. 1.0: cons1 (first come) gets it. 2.0: cons2 gets it, takes
    # Arabica #1, prod2 publishes #2 at once (taken too) and #3 at 2.25: done.
    # Served the other way, cons2 would be done at 1.25 and cons1 at 2.0.
    result = simulate(
        workload(
            [producer("prod1", (LINDEN, 1, 1.0)), producer("prod2", (ARABICA, 1, 0.25))],
            [
                consumer("cons0", [("add", LINDEN, 1)]),
                consumer("cons1", [("add", LINDEN, 1)]),
                consumer("cons2", [("add", LINDEN, 1), ("add", ARABICA, 3)]),
            ],
            queue=1,
        )
    )
    assert result.makespan == 2.25
    assert result.published == 6


# -- deadlocks -------------------------------------------------------------------


def built_to_deadlock(wait: float = 0.375) -> Workload:
    # prod1 makes 3 Arabica then 1 Linden; its 2 slots fill with Arabica at 0 and
    # 0.25, and at 0.5 the third Arabica is refused: it never reaches the Linden.
    # cons1 waits for Linden from 0; cons2 buys nothing and is done at 0.
    return workload(
        [producer("prod1", (ARABICA, 3, 0.25), (LINDEN, 1, 0.25), wait=wait)],
        [
            consumer("cons1", [("add", LINDEN, 1)], wait=wait),
            consumer("cons2", [("remove", ARABICA, 1)], wait=wait),
        ],
        queue=2,
    )


@pytest.mark.parametrize("poll", [False, True], ids=["ideal", "poll"])
def test_deadlock_is_reported_with_who_waits_for_what(poll: bool) -> None:
    result = simulate(built_to_deadlock(), poll=poll)
    assert result.makespan is None
    deadlock = result.deadlock
    assert isinstance(deadlock, Deadlock)
    assert deadlock.time == 0.5  # when prod1 got stuck
    assert deadlock.stalls == (Stall("cons1", LINDEN, ("prod1",)),)
    assert deadlock.slots == {"prod1": Counter({repr(ARABICA): 2})}
    lines = deadlock.explain()
    assert f"cons1 waits for {LINDEN!r} made by prod1" in lines
    assert f"prod1 has 2 of 2 slots taken by {ARABICA!r} that no remaining consumer wants" in lines
    assert result.purchases == Counter()  # cons2's order was empty
    assert result.published == 2


def test_deadlock_explains_mixed_slots_wanted_later() -> None:
    # Queue size 2: prod1 publishes Arabica at 0 and Earl Grey at 0.25, and at
    # 0.5 its Linden is refused. cons1 waits for Linden from 0; it wants Arabica
    # too, but only in its next session.
    earl_grey = Tea("Earl Grey", 7, "Black")
    result = simulate(
        workload(
            [producer("prod1", (ARABICA, 1, 0.25), (earl_grey, 1, 0.25), (LINDEN, 1, 0.25))],
            [consumer("cons1", [("add", LINDEN, 1)], [("add", ARABICA, 1)])],
            queue=2,
        )
    )
    assert result.deadlock is not None
    assert result.deadlock.time == 0.5
    assert result.deadlock.explain()[-1] == (
        f"prod1 has 2 of 2 slots taken by 1 {ARABICA!r}, 1 {earl_grey!r} "
        "that the stuck consumers want only after what they wait for"
    )


def test_deadlock_with_zero_waits_in_poll_mode_ends() -> None:
    # Zero waits make the classic design spin; the simulation must still stop.
    result = simulate(built_to_deadlock(wait=0.0), poll=True)
    assert result.deadlock is not None
    assert result.deadlock.stalls == (Stall("cons1", LINDEN, ("prod1",)),)


def test_deadlock_on_a_product_nobody_makes() -> None:
    # prod1's only step has quantity 0: it does nothing, so cons1 waits from 0 on.
    result = simulate(
        workload([producer("prod1", (LINDEN, 0, 0.25))], [consumer("cons1", [("add", LINDEN, 1)])])
    )
    assert result.deadlock is not None
    assert result.deadlock.time == 0.0
    assert result.deadlock.stalls == (Stall("cons1", LINDEN, ()),)
    assert result.deadlock.slots == {}
    assert f"cons1 waits for {LINDEN!r} made by no producer" in result.deadlock.explain()
    assert result.published == 0


# -- poll mode -------------------------------------------------------------------


def test_poll_mode_is_not_faster_than_ideal_here() -> None:
    # Poll, retry 0.375: session 1 takes unit 1 at 0, fails at 0, retries at 0.375
    # (fails: unit 2 comes at 0.5) and at 0.75 (gets it): orders at 0.75. Session 2
    # fails at 0.75 (unit 3 comes at 1.0) and gets it at 1.125. Ideal: 1.0.
    workload_ = one_producer_one_consumer()
    ideal, poll = simulate(workload_), simulate(workload_, poll=True)
    assert (ideal.makespan, poll.makespan) == (1.0, 1.125)
    assert poll.purchases == ideal.purchases


def test_poll_mode_equals_ideal_when_no_wait_happens() -> None:
    # Both producers publish at 0; cons1 finds everything on sale: makespan 0.
    no_wait = workload(
        [producer("prod1", (LINDEN, 1, 0.5)), producer("prod2", (ARABICA, 1, 0.5))],
        [consumer("cons1", [("add", LINDEN, 1), ("add", ARABICA, 1), ("remove", ARABICA, 1)])],
    )
    assert simulate(no_wait).makespan == simulate(no_wait, poll=True).makespan == 0.0
    # A retry that falls exactly when the unit comes costs nothing either: with
    # retry = make time = 0.5, the add of 2 gets unit 2 at 0.5 in both modes.
    aligned = workload(
        [producer("prod1", (LINDEN, 1, 0.5))], [consumer("cons1", [("add", LINDEN, 2)], wait=0.5)]
    )
    assert simulate(aligned).makespan == simulate(aligned, poll=True).makespan == 0.5


def test_zero_retry_wait_in_poll_mode_acts_at_once() -> None:
    # A spinning consumer gets each unit when it is published: the ideal 1.0.
    result = simulate(one_producer_one_consumer(retry=0.0), poll=True)
    assert result.makespan == 1.0


def test_no_consumers_means_nothing_to_wait_for() -> None:
    result = simulate(workload([producer("prod1", (LINDEN, 1, 0.5))], []))
    assert (result.makespan, result.deadlock, result.events) == (0.0, None, 0)


# -- course cases and generated workloads ----------------------------------------


@pytest.mark.skipif(not COURSE_CASES, reason=f"no course cases in {CONFORMANCE}")
@pytest.mark.parametrize("poll", [False, True], ids=["ideal", "poll"])
def test_course_cases_buy_what_they_should(poll: bool) -> None:
    total = 0.0
    for path in COURSE_CASES:
        case = load_workload(path)
        result = simulate(case, poll=poll)
        assert result.deadlock is None, path.name
        assert result.makespan is not None
        assert result.purchases == expected_purchases(case), path.name
        total += result.makespan
    if not poll and [path.stem for path in COURSE_CASES] == [f"{n:02}" for n in range(1, 11)]:
        assert total == pytest.approx(87.54, abs=0.01)  # the ideal total of 01..10


@pytest.mark.skipif(not (CONFORMANCE / "10.in").is_file(), reason="no course case 10")
def test_largest_course_case_simulates_fast() -> None:
    case = load_workload(CONFORMANCE / "10.in")
    start = time.perf_counter()
    simulate(case)
    assert time.perf_counter() - start < 1.0  # typically about 10 ms


@settings(max_examples=1500, deadline=None)
@given(
    producers=st.integers(1, 16),
    consumers=st.integers(0, 30),
    sessions=st.integers(0, 5),
    queue_size=st.integers(1, 15),
    seed=st.integers(0, 2**32 - 1),
    poll=st.booleans(),
)
def test_generated_workloads_never_deadlock(
    producers: int, consumers: int, sessions: int, queue_size: int, seed: int, poll: bool
) -> None:
    case = generate(producers, consumers, sessions=sessions, seed=seed, queue_size=queue_size)
    result = simulate(case, poll=poll)
    assert result.deadlock is None, result.deadlock.explain()
    assert result.purchases == expected_purchases(case)
    assert simulate(case, poll=poll) == result  # deterministic
