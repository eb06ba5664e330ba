"""The fuzz campaign's budget and figures, shared by its tests.

A short run in the default suite (a few seconds); ``MPMARKET_FUZZ_SECONDS=N``
gives each fuzz test N seconds instead, rounds of hypothesis examples until
they are spent. The figures (inputs tried, server crashes, books out of
balance, parser tracebacks) are printed at the end of the session and, with
``MPMARKET_FUZZ_REPORT=FILE``, written there as JSON.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable

# Seconds each fuzz test runs for; 0: one round of ``SHORT_EXAMPLES``.
BUDGET_S = float(os.environ.get("MPMARKET_FUZZ_SECONDS", "0") or 0)
SHORT_EXAMPLES = 40
ROUND_EXAMPLES = 200

FIGURES: Counter[str] = Counter()
# The inputs behind a nonzero failure figure, to reproduce them.
FAILURES: list[str] = []

FAILURE_FIGURES = ("server crashes", "books out of balance", "parser tracebacks")


def examples() -> int:
    """How many examples one round of a fuzz test tries."""
    return ROUND_EXAMPLES if BUDGET_S else SHORT_EXAMPLES


def run(one_round: Callable[[], None]) -> None:
    """One round, or rounds until the budget is spent."""
    deadline = time.monotonic() + BUDGET_S
    one_round()
    while time.monotonic() < deadline:
        one_round()


def failed(figure: str, what: str) -> None:
    FIGURES[figure] += 1
    if len(FAILURES) < 20:
        FAILURES.append(f"{figure}: {what}")


def summary() -> str:
    names = ("inputs tried", "protocol inputs", "workload inputs", *FAILURE_FIGURES)
    return ", ".join(f"{name}: {FIGURES[name]:,}" for name in names)
