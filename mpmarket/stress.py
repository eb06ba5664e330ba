"""``mpmarket stress``: churn as fast as the market goes, kill agents, check the books.

A generated workload with no make or wait times runs for a set duration
while agents are killed at random times (seeded). Throughout, the runner
audits the market's books from scratch a few times a second; at the end every
consumer's orders are checked against its sessions. Any broken invariant, or
an agent that died without being killed, fails the run: this is what a CI job
runs to stress a machine and the market.

Only producers that make mixes of products are killed: every product keeps a
producer that makes nothing else, so a kill never starves a consumer (see
``workload.generate``). Killed consumers give their carts back.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from mpmarket.errors import WorkloadError
from mpmarket.runner import LocalRun, RunObserver, RunReport
from mpmarket.workload import Workload, generate

__all__ = ["StressPlan", "StressResult", "plan_stress", "run_stress"]

# Sessions per second of the run, shared by all consumers: more than the
# market completes on these machines (about 3,000 a second), so consumers are
# still busy at the deadline, and few enough to generate in a moment.
SESSIONS_PER_SECOND = 8000

# Kills happen within this part of the run, so that there is churn before
# and after each of them.
KILL_WINDOW = (0.2, 0.8)


@dataclass(frozen=True)
class StressPlan:
    """The workload, how long it runs, and who is killed when."""

    workload: Workload
    duration_s: float
    kills: tuple[tuple[float, str], ...]
    seed: int


@dataclass
class StressResult:
    """A stress run's report and its verdict."""

    plan: StressPlan
    report: RunReport
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def plan_stress(
    producers: int,
    consumers: int,
    *,
    duration_s: float,
    seed: int = 0,
    kill_consumers: int = 0,
    kill_producers: int = 0,
    queue_size: int = 15,
) -> StressPlan:
    """A reproducible stress run; WorkloadError when the kills cannot be met."""
    if kill_consumers > consumers:
        raise WorkloadError(
            "<stress>",
            "--kill-consumers",
            f"at most --consumers ({consumers})",
            str(kill_consumers),
        )
    if kill_producers >= producers:
        raise WorkloadError(
            "<stress>",
            "--kill-producers",
            f"fewer than --producers ({producers}): each product keeps a maker",
            str(kill_producers),
        )
    sessions = max(10, math.ceil(duration_s * SESSIONS_PER_SECOND / max(consumers, 1)))
    workload = generate(
        producers,
        consumers,
        sessions=sessions,
        seed=seed,
        queue_size=queue_size,
        make_time=0.0,
        wait_time=0.0,
        kinds=min(8, producers - kill_producers),
    )
    rng = random.Random(seed)
    mixers = [spec.name for spec in workload.producers[min(8, producers - kill_producers) :]]
    victims = rng.sample([spec.name for spec in workload.consumers], kill_consumers)
    victims += rng.sample(mixers, kill_producers)
    low, high = KILL_WINDOW
    kills = tuple(sorted((round(rng.uniform(low, high) * duration_s, 3), name) for name in victims))
    return StressPlan(workload, duration_s, kills, seed)


def run_stress(
    plan: StressPlan,
    *,
    observer: RunObserver | None = None,
    start_method: str | None = None,
    started_at: float | None = None,
) -> StressResult:
    """Run the plan; collect every broken promise as a problem."""
    report = LocalRun(
        plan.workload,
        observer=observer,
        start_method=start_method,
        started_at=started_at,
        deadline_s=plan.duration_s,
        kills=plan.kills,
        audit=True,
    ).run()
    killed = {name for _, name in plan.kills}
    problems = list(report.violations)
    problems += [
        f"{d.describe()} without being killed" for d in report.deaths if d.name not in killed
    ]
    problems += report.failures
    problems += report.stall
    if report.books is not None and not report.books.balanced:
        problems.append(f"the books do not balance at the end: {report.books}")
    return StressResult(plan, report, problems)
