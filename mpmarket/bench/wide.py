"""``run_wide``: generated wide, fast workloads on mpmarket and on the classic design.

Hundreds of agents whose make and retry times are 1 to 20 ms: where start-up,
shutdown and the market's own cost show, not the workload's sleeps. Two
shapes, their sizes configurable:

- **wide** (default 64 producers x 256 consumers): eight kinds, the first
  eight producers making one kind each and the others mixes (as
  ``mpmarket.core.generate``), a remove now and then;
- **one kind** (default 16 x 128): every producer and consumer on one kind,
  with many removes (``ONE_KIND_REMOVES`` of the ops that can be one).

Each is generated from ``seed``, written as course JSON and read back
(``wide_workload``), so it is what a course case of that size would be.
Every round runs each shape on each design (``mpmarket.bench.classic``):
mpmarket, mpmarket packed by 8 agents a process, the classic design as
processes, the classic design as threads, one after the other.

Figures, one case per shape and design (``"64x256 mpmarket"``...):
``agents``, ``bought``, ``wall_s``, ``startup_s``, ``market_s``,
``shutdown_s``, ``ideal_s`` (the simulated ideal), ``market_vs_ideal``;
mpmarket's cases also ``wall_vs_classic_threads``, ``market_vs_classic_threads``
and ``wall_vs_classic_processes`` (the same shape's classic runs of the same
round). Checks ``ok`` and ``correct`` (the lines bought equal the expected).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence

from mpmarket.bench.classic import (
    CLASSIC_PROCESSES,
    CLASSIC_THREADS,
    DESIGNS,
    MPMARKET,
    MPMARKET_PACKED,
    run_design,
)
from mpmarket.bench.results import BenchResult, Case, Progress, _quiet, _ratio
from mpmarket.core.dump import dump_course_json
from mpmarket.core.generate import CATALOG, random_producers, random_session
from mpmarket.core.load import parse_course
from mpmarket.core.simulate import simulate
from mpmarket.core.workload import (
    DEFAULT_QUEUE_SIZE,
    ConsumerSpec,
    Workload,
)
from mpmarket.products import Product

__all__ = [
    "ONE_KIND_REMOVES",
    "WIDE_KINDS",
    "WIDE_REMOVES",
    "WIDE_SESSIONS",
    "WIDE_TIMES",
    "run_wide",
    "wide_workload",
]

# Make, republish and retry times are drawn from this range (seconds).
WIDE_TIMES = (0.001, 0.020)

# Kinds of the wide shape, and the share of its ops that are removes (where
# the session holds something to remove); the one-kind shape's share.
WIDE_KINDS = 8
WIDE_REMOVES = 0.2
ONE_KIND_REMOVES = 0.5

# Sessions per consumer: at 64x256, an ideal of about a second.
WIDE_SESSIONS = 4


def wide_workload(
    producers: int,
    consumers: int,
    *,
    kinds: int = WIDE_KINDS,
    removes: float = WIDE_REMOVES,
    sessions: int = 2,
    seed: int = 0,
) -> Workload:
    """A wide, fast workload, in the course JSON's shape, that cannot deadlock.

    The first ``kinds`` producers each make one kind (so a full producer has
    its whole queue on sale for whoever waits on that kind: see
    ``mpmarket.core.generate``); the others make mixes of up to three kinds
    in play. Consumers run ``sessions`` sessions of 1 to 4 ops: an add of 1
    to 3 units, or, with probability ``removes`` where the session holds
    units, a remove of some of them.
    """
    rng = random.Random(seed)
    in_play: list[Product] = list(CATALOG[: max(1, min(kinds, producers, len(CATALOG)))])

    def a_time() -> float:
        return round(rng.uniform(*WIDE_TIMES), 6)

    producer_specs = random_producers(rng, producers, in_play, a_time, a_time)
    consumer_specs = []
    for index in range(consumers):
        session_list = []
        for _ in range(sessions):
            session_list.append(random_session(rng, in_play, removes=removes))
        consumer_specs.append(ConsumerSpec(f"cons{index + 1}", a_time(), tuple(session_list)))
    workload = Workload(tuple(producer_specs), tuple(consumer_specs), DEFAULT_QUEUE_SIZE)
    # Through the course's JSON and back: what a course case of this size is.
    return parse_course(json.loads(dump_course_json(workload)), "<wide>")


def _shapes(
    wide: tuple[int, int] | None, one_kind: tuple[int, int] | None, sessions: int, seed: int
) -> list[tuple[str, Workload]]:
    shapes = []
    if wide is not None:
        p, c = wide
        shapes.append((f"{p}x{c}", wide_workload(p, c, sessions=sessions, seed=seed)))
    if one_kind is not None:
        p, c = one_kind
        workload = wide_workload(
            p, c, kinds=1, removes=ONE_KIND_REMOVES, sessions=sessions, seed=seed
        )
        shapes.append((f"{p}x{c} one kind", workload))
    return shapes


def run_wide(
    wide: tuple[int, int] | None = (64, 256),
    one_kind: tuple[int, int] | None = (16, 128),
    *,
    sessions: int = WIDE_SESSIONS,
    seed: int = 0,
    designs: Sequence[str] = DESIGNS,
    repeat: int = 3,
    start_method: str | None = None,
    progress: Progress = _quiet,
) -> BenchResult:
    """Each shape on each design, per round; against the ideal and the classic threads."""
    for design in designs:
        if design not in DESIGNS:
            raise ValueError(f"wide designs are {', '.join(DESIGNS)}, got {design!r}")
    designs = [design for design in DESIGNS if design in designs]
    shapes = _shapes(wide, one_kind, sessions, seed)
    if not shapes:
        raise ValueError("wide needs a shape: the wide one, the one-kind one, or both")
    ideals = {shape: simulate(workload).makespan for shape, workload in shapes}
    rounds: dict[str, list[dict[str, float | None]]] = {}
    checks: dict[str, dict[str, bool]] = {}
    for number in range(repeat):
        for shape, workload in shapes:
            measured: dict[str, dict[str, float | None]] = {}
            for design in designs:
                name = f"{shape} {design}"
                progress(f"wide {name}: round {number + 1} of {repeat}")
                figures, ok, correct = run_design(design, workload, start_method=start_method)
                figures["ideal_s"] = ideals[shape]
                figures["market_vs_ideal"] = _ratio(figures["market_s"], ideals[shape])
                measured[design] = figures
                case_checks = checks.setdefault(name, {"ok": True, "correct": True})
                case_checks["ok"] &= ok
                case_checks["correct"] &= correct
            threads = measured.get(CLASSIC_THREADS, {})
            processes = measured.get(CLASSIC_PROCESSES, {})
            for design in (MPMARKET, MPMARKET_PACKED):
                if design in measured:
                    ours = measured[design]
                    ours["wall_vs_classic_threads"] = _ratio(ours["wall_s"], threads.get("wall_s"))
                    ours["market_vs_classic_threads"] = _ratio(
                        ours["market_s"], threads.get("market_s")
                    )
                    ours["wall_vs_classic_processes"] = _ratio(
                        ours["wall_s"], processes.get("wall_s")
                    )
            for design, figures in measured.items():
                rounds.setdefault(f"{shape} {design}", []).append(figures)
    names = [f"{shape} {design}" for shape, _ in shapes for design in designs]
    params = {
        "wide": None if wide is None else f"{wide[0]}x{wide[1]}",
        "one_kind": None if one_kind is None else f"{one_kind[0]}x{one_kind[1]}",
        "sessions": sessions,
        "seed": seed,
        "designs": list(designs),
        "times_ms": [t * 1000 for t in WIDE_TIMES],
        "kinds": WIDE_KINDS,
        "removes": WIDE_REMOVES,
        "one_kind_removes": ONE_KIND_REMOVES,
    }
    cases = [Case.of(name, rounds[name], checks[name]) for name in names]
    return BenchResult("wide", repeat, params, cases)
