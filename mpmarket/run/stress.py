"""``mpmarket stress``: churn as fast as the market goes, kill agents, check the books.

A generated workload with no make or wait times runs for a set duration
while agents are killed at random times (seeded). Throughout, the runner
audits the market's books from scratch a few times a second; at the end every
consumer's orders are checked against its sessions. Any broken invariant, or
an agent that died without being killed, fails the run: this is what a CI job
runs to stress a machine and the market.

Only producers that make mixes of products are killed: every product keeps a
producer that makes nothing else, so a kill never starves a consumer (see
``core.generate.generate``). Killed consumers give their carts back.

With agents packed several to a process, a kill is a process's: all its
agents die together, and only processes of mixers alone are picked among
the producers'.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import TypeVar

from mpmarket.core.generate import generate
from mpmarket.core.workload import Workload
from mpmarket.errors import WorkloadError
from mpmarket.run.local import LocalRun
from mpmarket.run.plan import pack_agents
from mpmarket.run.report import RunObserver, RunReport

__all__ = ["StressPlan", "StressResult", "plan_stress", "run_stress", "stress_verdict"]

# Sessions per second of the run, shared by all consumers: more than the
# market completes on these machines (about 3,000 a second), so consumers are
# still busy at the deadline, and few enough to generate in a moment.
SESSIONS_PER_SECOND = 8000

# Kills happen within this part of the run, so that there is churn before
# and after each of them.
KILL_WINDOW = (0.2, 0.8)


@dataclass(frozen=True)
class StressPlan:
    """The workload, how long it runs, and who is killed when.

    ``kills`` name one agent of each process killed; ``casualties`` are every
    agent of those processes (the same agents when each has its own).
    """

    workload: Workload
    duration_s: float
    kills: tuple[tuple[float, str], ...]
    seed: int
    agents_per_process: int = 1
    casualties: dict[str, tuple[str, ...]] = field(default_factory=dict)  # by kill name


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
    agents_per_process: int = 1,
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
    kinds = min(8, producers - kill_producers)  # the first `kinds` producers make one each
    workload = generate(
        producers,
        consumers,
        sessions=sessions,
        seed=seed,
        queue_size=queue_size,
        make_time=0.0,
        wait_time=0.0,
        kinds=kinds,
    )
    rng = random.Random(seed)
    mixers = {spec.name for spec in workload.producers[kinds:]}
    packs = [
        (pack[0][0], [spec.name for _, spec in pack])
        for pack in pack_agents(workload, agents_per_process)
    ]
    consumer_packs = [names for role, names in packs if role == "consumer"]
    mixer_packs = [names for role, names in packs if role == "producer" and set(names) <= mixers]
    for option, wanted, found, what in (
        ("--kill-consumers", kill_consumers, consumer_packs, "consumer processes"),
        ("--kill-producers", kill_producers, mixer_packs, "processes of mixing producers only"),
    ):
        if wanted > len(found):
            raise WorkloadError(
                "<stress>", option, f"at most {len(found)}, the {what}", str(wanted)
            )
    victims = rng.sample(consumer_packs, kill_consumers) + rng.sample(mixer_packs, kill_producers)
    low, high = KILL_WINDOW
    kills = tuple(
        sorted((round(rng.uniform(low, high) * duration_s, 3), pack[0]) for pack in victims)
    )
    casualties = {pack[0]: tuple(pack) for pack in victims}
    return StressPlan(workload, duration_s, kills, seed, agents_per_process, casualties)


def run_stress(
    plan: StressPlan,
    *,
    observer: RunObserver | None = None,
    start_method: str | None = None,
    started_at: float | None = None,
    trace: bool = False,
) -> StressResult:
    """Run the plan; collect every broken promise as a problem (``trace``: ``--trace``)."""
    report = LocalRun(
        plan.workload,
        observer=observer,
        start_method=start_method,
        started_at=started_at,
        deadline_s=plan.duration_s,
        kills=plan.kills,
        audit=True,
        agents_per_process=plan.agents_per_process,
        trace=trace,
    ).run()
    killed = {name for pack in plan.casualties.values() for name in pack}
    problems = list(report.violations)
    problems += [
        f"{d.describe()} without being killed" for d in report.deaths if d.name not in killed
    ]
    problems += report.failures
    problems += report.stall
    if report.books is not None and not report.books.balanced:
        problems.append(f"the books do not balance at the end: {report.books}")
    return StressResult(plan, report, problems)


# An exit code: the verdict keeps the caller's type (the CLI's ExitCode).
Code = TypeVar("Code", bound=int)


def stress_verdict(result: StressResult, run_code: Code, *, ok: Code, failed: Code) -> Code:
    """A stress run's exit code, from the code its run report alone would get.

    ``run_code`` is the run's code as for ``mpmarket run``; ``ok`` and
    ``failed`` are the success and run-failed codes. The planned kills are no
    failure: a run that failed only by its deaths passes when no promise
    broke. Any problem fails a run that otherwise passed. A graver code
    (interrupted, unreachable, stalled) stays.
    """
    code = run_code
    if code == failed and result.ok:
        code = ok  # the deaths were the planned kills
    if not result.ok and code == ok:
        code = failed
    return code
