"""``run_course``: course cases on mpmarket and the classic design, against the simulated ideal.

Every ``*.in`` of a folder through ``LocalRun`` (mpmarket, and the classic
design as processes on its stock server) and as the course's own classic
threads in this process (``mpmarket.bench.classic``), one design right after
the other, against the simulated ideal of ``mpmarket.core.simulate`` when
that module is there.

Figures, one case per file and design and a "total" per design: ``agents``,
``bought``, ``wall_s``, ``startup_s``, ``market_s``, ``ideal_s``,
``market_vs_ideal``, ``wall_vs_ideal``; mpmarket's cases also
``wall_minus_ideal_s``, ``wall_vs_classic_threads``,
``wall_minus_classic_threads_s`` and ``wall_vs_classic_processes`` (against
the classic runs of the same case and round). The ideal figures are null when the simulator is missing
or finds no makespan. Checks ``ok``, ``correct`` (the lines bought equal
the workload's expected purchases) and ``deadlock_free`` (false when the
simulator finds that the workload deadlocks: such a case is not run, as
its run would never end, and its figures are null).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mpmarket.bench.classic import CLASSIC_PROCESSES, CLASSIC_THREADS, MPMARKET, run_design
from mpmarket.bench.results import BenchResult, Case, Progress, _quiet, _ratio
from mpmarket.core.load import load_course_json
from mpmarket.core.workload import Workload
from mpmarket.errors import WorkloadError

__all__ = ["COURSE_DESIGNS", "COURSE_FIGURES", "COURSE_VERSUS", "run_course"]


# The designs a course case runs on, in this order; mpmarket's rows gain
# ``COURSE_VERSUS``, its ratios to the classic designs of the same round.
COURSE_DESIGNS = (MPMARKET, CLASSIC_PROCESSES, CLASSIC_THREADS)

COURSE_VERSUS = (
    "wall_minus_ideal_s",
    "wall_vs_classic_threads",
    "wall_minus_classic_threads_s",
    "wall_vs_classic_processes",
)

_SUMMED = ("agents", "bought", "wall_s", "startup_s", "market_s")

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


def _case_name(stem: str, design: str) -> str:
    return stem if design == MPMARKET else f"{stem} {design}"


def _versus(ours: dict[str, float | None], designs: dict[str, dict[str, float | None]]) -> None:
    """Add to mpmarket's figures its ratios to the classic designs of the same round."""
    threads = designs.get(CLASSIC_THREADS, {})
    processes = designs.get(CLASSIC_PROCESSES, {})
    wall, ideal = ours["wall_s"], ours["ideal_s"]
    ours["wall_minus_ideal_s"] = None if wall is None or ideal is None else wall - ideal
    ours["wall_vs_classic_threads"] = _ratio(wall, threads.get("wall_s"))
    threads_wall = threads.get("wall_s")
    ours["wall_minus_classic_threads_s"] = (
        None if wall is None or threads_wall is None else wall - threads_wall
    )
    ours["wall_vs_classic_processes"] = _ratio(wall, processes.get("wall_s"))


def run_course(
    directory: str | Path,
    *,
    repeat: int = 3,
    start_method: str | None = None,
    agents_per_process: int = 1,
    designs: Sequence[str] = COURSE_DESIGNS,
    progress: Progress = _quiet,
) -> BenchResult:
    """Every ``*.in`` of ``directory`` on each design, against the simulated ideal.

    Cases, per file and for the "total": ``"01"`` (mpmarket),
    ``"01 classic processes"``, ``"01 classic threads"``, for the designs
    measured, each design run right after the other on the same case.
    """
    for design in designs:
        if design not in COURSE_DESIGNS:
            raise ValueError(f"course designs are {', '.join(COURSE_DESIGNS)}, got {design!r}")
    designs = [design for design in COURSE_DESIGNS if design in designs]
    directory = Path(directory)
    paths = sorted(directory.glob("*.in"))
    if not paths:
        raise WorkloadError(str(directory), "", "a folder holding course cases (*.in)")
    workloads = [load_course_json(path) for path in paths]
    simulate = _simulator()
    ideals = [None if simulate is None else simulate(w).makespan for w in workloads]
    known_ideals = [ideal for ideal in ideals if ideal is not None]
    ideal_sum = sum(known_ideals) if len(known_ideals) == len(ideals) else None
    stems = [path.stem for path in paths] + ["total"]
    rounds: dict[str, list[dict[str, float | None]]] = {}
    # The simulator gives no makespan when the workload deadlocks: a real run
    # of it would never end, so it is not run.
    runnable = [simulate is None or ideal is not None for ideal in ideals]
    checks = {
        _case_name(stem, design): {"ok": ok, "correct": ok, "deadlock_free": ok}
        for stem, ok in zip(stems, [*runnable, all(runnable)], strict=True)
        for design in designs
    }
    for number in range(repeat):
        sums = {design: dict.fromkeys(_SUMMED, 0.0) for design in designs}
        for index, (path, workload, ideal) in enumerate(zip(paths, workloads, ideals, strict=True)):
            measured: dict[str, dict[str, float | None]] = {}
            for design in designs:
                name = _case_name(path.stem, design)
                if not runnable[index]:
                    progress(f"course {name}: the simulator finds a deadlock, not run")
                    agents = len(workload.producers) + len(workload.consumers)
                    measured[design] = dict.fromkeys(COURSE_FIGURES) | {"agents": agents}
                    continue
                progress(f"course {name}: round {number + 1} of {repeat}")
                figures, ok, correct = run_design(
                    design,
                    workload,
                    start_method=start_method,
                    agents_per_process=agents_per_process,
                )
                for figure in _SUMMED:
                    sums[design][figure] += figures[figure] or 0.0
                measured[design] = {
                    **{figure: figures[figure] for figure in _SUMMED},
                    "ideal_s": ideal,
                    "market_vs_ideal": _ratio(figures["market_s"], ideal),
                    "wall_vs_ideal": _ratio(figures["wall_s"], ideal),
                }
                checks[name]["ok"] &= ok
                checks[name]["correct"] &= correct
            _record(rounds, path.stem, measured)
        _record(
            rounds,
            "total",
            {
                design: {
                    **totals,
                    "ideal_s": ideal_sum,
                    "market_vs_ideal": _ratio(totals["market_s"], ideal_sum),
                    "wall_vs_ideal": _ratio(totals["wall_s"], ideal_sum),
                }
                for design, totals in sums.items()
            },
        )
    for design in designs:
        total = checks[_case_name("total", design)]
        for check in total:
            total[check] = all(checks[_case_name(stem, design)][check] for stem in stems[:-1])
    names = [_case_name(stem, design) for stem in stems for design in designs]
    cases = [Case.of(name, rounds[name], checks[name]) for name in names]
    params = {
        "directory": str(directory),
        "cases": len(paths),
        "agents_per_process": agents_per_process,
        "designs": list(designs),
        "ideal_available": simulate is not None,
    }
    return BenchResult("course", repeat, params, cases)


def _record(
    rounds: dict[str, list[dict[str, float | None]]],
    stem: str,
    measured: dict[str, dict[str, float | None]],
) -> None:
    """One round of one case: each design's figures, mpmarket's with its ratios."""
    if MPMARKET in measured:
        _versus(measured[MPMARKET], measured)
    for design, figures in measured.items():
        rounds.setdefault(_case_name(stem, design), []).append(figures)
