"""What a benchmark measured: figures over rounds, cases, the JSON file format.

Every figure is measured ``repeat`` times, in rounds: each round measures the
floor (where one is needed) and then every case, so a ratio pairs a case with
the floor of its own round. A figure is reported as the median, min and max
over the rounds (``Stat``); a ``Case`` is one row of figures and checks; a
``BenchResult`` is one invocation, and ``to_json`` writes it.

JSON (``BenchResult.to_json``), version 1::

    {
      "benchmark": "floor" | "churn" | "latency" | "scale" | "course" | "wide",
      "version": 1,
      "machine": {"cpu_count": int, "python": str, "platform": str},
      "repeat": int,                       # rounds measured
      "params": {str: value},              # the settings of this invocation
      "floor": CASE | null,                # the reference of the ratios, if any
      "cases": [CASE, ...]
    }

    CASE = {
      "case": str,                         # "1 client", "16x32", "01", "total"...
      "figures": {str: STAT | null},       # null: not measurable (see below)
      "checks": {str: bool}                # consistency checks of the runs
    }
    STAT = {"median": number, "min": number, "max": number}

The figures of each benchmark (the name carries the unit) are listed in the
docstring of its module: ``floor``, ``churn``, ``latency``, ``scale``,
``course``, ``wide``.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BENCH_VERSION",
    "MB",
    "BenchResult",
    "Case",
    "Progress",
    "Stat",
    "machine_info",
    "parse_sizes",
    "percentile",
]

BENCH_VERSION = 1

MB = 1024 * 1024

# What a benchmark calls to say where it is ("churn 4x8: round 1 of 3").
Progress = Callable[[str], None]


@dataclass(frozen=True)
class Stat:
    """One figure over the rounds."""

    median: float
    min: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float | None]) -> Stat | None:
        """The median, min and max of the values measured; None if none was."""
        measured = [v for v in values if v is not None]
        if not measured:
            return None
        return cls(statistics.median(measured), min(measured), max(measured))


@dataclass
class Case:
    """One row of a benchmark: its figures over the rounds and its checks."""

    name: str
    figures: dict[str, Stat | None] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)

    @classmethod
    def of(
        cls, name: str, rounds: Sequence[dict[str, float | None]], checks: dict[str, bool]
    ) -> Case:
        """Summarize per-round figure dicts (same keys, first round's order)."""
        names = list(rounds[0]) if rounds else []
        figures = {n: Stat.of([r.get(n) for r in rounds]) for n in names}
        return cls(name, figures, checks)

    def median(self, figure: str) -> float | None:
        stat = self.figures.get(figure)
        return None if stat is None else stat.median

    def to_json(self) -> dict[str, Any]:
        return {
            "case": self.name,
            "figures": {
                name: None
                if stat is None
                else {"median": stat.median, "min": stat.min, "max": stat.max}
                for name, stat in self.figures.items()
            },
            "checks": dict(self.checks),
        }


def machine_info() -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count() or 1,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


@dataclass
class BenchResult:
    """What one benchmark invocation measured; ``to_json`` is the file format."""

    benchmark: str
    repeat: int
    params: dict[str, Any]
    cases: list[Case]
    floor: Case | None = None
    machine: dict[str, Any] = field(default_factory=machine_info)

    @property
    def failed_checks(self) -> list[str]:
        """``"case: check"`` for every check that did not hold."""
        cases = ([self.floor] if self.floor else []) + self.cases
        return [f"{c.name}: {name}" for c in cases for name, ok in c.checks.items() if not ok]

    def to_json(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            "version": BENCH_VERSION,
            "machine": dict(self.machine),
            "repeat": self.repeat,
            "params": dict(self.params),
            "floor": None if self.floor is None else self.floor.to_json(),
            "cases": [case.to_json() for case in self.cases],
        }


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0-100), interpolating linearly between ranks."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """``"1x1,4x8"`` to ``[(1, 1), (4, 8)]`` (producers x consumers); ValueError if bad."""
    sizes = []
    for part in text.split(","):
        producers, sep, consumers = part.strip().lower().partition("x")
        if not sep or not producers.isdigit() or not consumers.isdigit():
            raise ValueError(f"expected PRODUCERSxCONSUMERS such as 4x8, got {part.strip()!r}")
        if int(producers) < 1 or int(consumers) < 1:
            raise ValueError(f"need at least one producer and one consumer, got {part.strip()!r}")
        sizes.append((int(producers), int(consumers)))
    return sizes


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def _quiet(_message: str) -> None:
    return None
