"""``run_course``: course cases through ``LocalRun``, against the simulated ideal.

Every ``*.in`` of a folder through ``LocalRun``, against the simulated ideal
of ``mpmarket.core.simulate`` when that module is there.

Figures, one case per file and a "total": ``agents``, ``bought``,
``wall_s``, ``startup_s``, ``market_s``, ``ideal_s``, ``market_vs_ideal``,
``wall_vs_ideal``; the ideal figures are null when the simulator is missing
or finds no makespan. Checks ``ok``, ``correct`` (the lines bought equal
the workload's expected purchases) and ``deadlock_free`` (false when the
simulator finds that the workload deadlocks: such a case is not run, as
its run would never end, and its figures are null).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mpmarket.bench.results import BenchResult, Case, Progress, _quiet, _ratio
from mpmarket.core.load import load_course_json
from mpmarket.core.workload import Workload, expected_purchases, purchase_line
from mpmarket.errors import WorkloadError
from mpmarket.run.local import LocalRun
from mpmarket.run.report import RunReport

__all__ = ["COURSE_FIGURES", "run_course"]


COURSE_FIGURES = (
    "agents",
    "bought",
    "wall_s",
    "startup_s",
    "market_s",
    "ideal_s",
    "market_vs_ideal",
    "wall_vs_ideal",
)


def _simulator() -> Callable[[Workload], Any] | None:
    """``mpmarket.core.simulate.simulate``, or None while that module is missing."""
    try:
        from mpmarket.core.simulate import simulate
    except ImportError:
        return None
    return simulate


def _bought_lines(report: RunReport) -> Counter[str]:
    return Counter(
        purchase_line(consumer, product)
        for consumer, products in report.orders
        for product in products
    )


def run_course(
    directory: str | Path,
    *,
    repeat: int = 3,
    start_method: str | None = None,
    agents_per_process: int = 1,
    progress: Progress = _quiet,
) -> BenchResult:
    """Every ``*.in`` of ``directory`` through LocalRun, against the simulated ideal."""
    directory = Path(directory)
    paths = sorted(directory.glob("*.in"))
    if not paths:
        raise WorkloadError(str(directory), "", "a folder holding course cases (*.in)")
    workloads = [load_course_json(path) for path in paths]
    simulate = _simulator()
    ideals = [None if simulate is None else simulate(w).makespan for w in workloads]
    known_ideals = [ideal for ideal in ideals if ideal is not None]
    ideal_sum = sum(known_ideals) if len(known_ideals) == len(ideals) else None
    rounds: list[list[dict[str, float | None]]] = [[] for _ in paths]
    totals: list[dict[str, float | None]] = []
    # The simulator gives no makespan when the workload deadlocks: a real run
    # of it would never end, so it is not run.
    runnable = [simulate is None or ideal is not None for ideal in ideals]
    checks = [{"ok": ok, "correct": ok, "deadlock_free": ok} for ok in runnable]
    for number in range(repeat):
        sums: dict[str, float] = dict.fromkeys(
            ("agents", "bought", "wall_s", "startup_s", "market_s"), 0
        )
        for index, (path, workload, ideal) in enumerate(zip(paths, workloads, ideals, strict=True)):
            if not runnable[index]:
                progress(f"course {path.stem}: the simulator finds a deadlock, not run")
                agents = len(workload.producers) + len(workload.consumers)
                rounds[index].append(dict.fromkeys(COURSE_FIGURES) | {"agents": agents})
                continue
            progress(f"course {path.stem}: round {number + 1} of {repeat}")
            started = time.perf_counter()
            report = LocalRun(
                workload,
                start_method=start_method,
                started_at=started,
                agents_per_process=agents_per_process,
            ).run()
            figures = {
                "agents": len(workload.producers) + len(workload.consumers),
                "bought": report.products_bought,
                "wall_s": report.wall_s,
                "startup_s": report.startup_s,
                "market_s": report.market_s,
            }
            for name, value in figures.items():
                sums[name] += value
            rounds[index].append(
                {
                    **figures,
                    "ideal_s": ideal,
                    "market_vs_ideal": _ratio(report.market_s, ideal),
                    "wall_vs_ideal": _ratio(report.wall_s, ideal),
                }
            )
            checks[index]["ok"] &= report.ok
            checks[index]["correct"] &= _bought_lines(report) == expected_purchases(workload)
        totals.append(
            {
                **sums,
                "ideal_s": ideal_sum,
                "market_vs_ideal": _ratio(sums["market_s"], ideal_sum),
                "wall_vs_ideal": _ratio(sums["wall_s"], ideal_sum),
            }
        )
    cases = [Case.of(path.stem, rounds[index], checks[index]) for index, path in enumerate(paths)]
    total_checks = {name: all(c[name] for c in checks) for name in checks[0]}
    cases.append(Case.of("total", totals, total_checks))
    params = {
        "directory": str(directory),
        "cases": len(paths),
        "agents_per_process": agents_per_process,
        "ideal_available": simulate is not None,
    }
    return BenchResult("course", repeat, params, cases)
