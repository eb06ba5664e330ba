"""``run_scale``: start-up time and memory of a large run, and a leak check.

A generated run of many agents through ``LocalRun``: start-up time, RSS and
PSS of the server and of each agent, and the server's RSS growth over a
long churn (a leak check, ``_churn_round`` with ``watch_server``).

Figures, case "N agents": ``agents``, ``processes`` (agent processes: fewer
with ``agents_per_process``), ``startup_s``, ``wall_s``, ``server_rss_mb``,
``agent_rss_mb`` and ``agent_pss_mb`` (per agent: the agent processes'
sum over their agents), ``process_pss_max_mb`` (the largest agent
process), ``processes_sampled`` (those still there to be read when all
were released); PSS figures are null where
``/proc/PID/smaps_rollup`` does not exist. Case "churn PxC": ``seconds``,
``bought_per_s``, ``server_rss_start_mb``, ``server_rss_end_mb``,
``server_rss_growth_mb``. Checks ``ok`` and ``bought_all`` (the run bought
what its workload says).
"""

from __future__ import annotations

import contextlib
import os
import time

import psutil

from mpmarket.bench.churn import LEAK_WARMUP, _churn_round
from mpmarket.bench.results import MB, BenchResult, Case, Progress, _quiet
from mpmarket.bench.workers import _pss, _rss, _server_processes
from mpmarket.core.generate import generate
from mpmarket.proc.context import process_context
from mpmarket.run.local import LocalRun
from mpmarket.run.report import RunObserver

__all__ = ["run_scale"]


class _MemoryObserver(RunObserver):
    """Takes the memory of the server and of every agent process once all are released.

    ``rss`` and ``pss`` hold (bytes, agents in the process) per process read.
    """

    def __init__(self) -> None:
        self.run: LocalRun | None = None
        self.server_rss: int | None = None
        self.rss: list[tuple[int, int]] = []
        self.pss: list[tuple[int, int]] = []

    def on_started(self, producers: int, consumers: int) -> None:
        assert self.run is not None
        for server in _server_processes():
            self.server_rss = _rss(server)
        processes = []
        for pid, agents in self.run.agent_processes().items():
            with contextlib.suppress(psutil.Error):
                processes.append((psutil.Process(pid), agents))
        # RSS of all first (cheap), then PSS: both before consumers start leaving.
        rss = [(_rss(process), agents) for process, agents in processes]
        self.rss = [(value, agents) for value, agents in rss if value is not None]
        pss = [(_pss(process), agents) for process, agents in processes]
        self.pss = [(value, agents) for value, agents in pss if value is not None]


def _mb(value: float | None) -> float | None:
    return None if value is None else value / MB


def _per_agent(read: list[tuple[int, int]]) -> float | None:
    """MB per agent of the processes read: their sum over their agents."""
    return _mb(sum(value for value, _ in read) / sum(n for _, n in read)) if read else None


def _scale_round(
    agents: int, seed: int, start_method: str | None, agents_per_process: int = 1
) -> tuple[dict[str, float | None], dict[str, bool]]:
    workload = generate(agents // 2, agents - agents // 2, sessions=1, seed=seed)
    observer = _MemoryObserver()
    started = time.perf_counter()
    run = observer.run = LocalRun(
        workload,
        observer=observer,
        start_method=start_method,
        started_at=started,
        agents_per_process=agents_per_process,
    )
    report = run.run()
    figures = {
        "agents": agents,
        "processes": len(run.agent_processes(alive=False)),
        "startup_s": report.startup_s,
        "wall_s": report.wall_s,
        "server_rss_mb": _mb(observer.server_rss),
        "agent_rss_mb": _per_agent(observer.rss),
        "agent_pss_mb": _per_agent(observer.pss),
        "process_pss_max_mb": _mb(max(value for value, _ in observer.pss))
        if observer.pss
        else None,
        "processes_sampled": len(observer.rss),
    }
    checks = {"ok": report.ok, "bought_all": report.products_bought == workload.products_to_buy}
    return figures, checks


def run_scale(
    agents: int = 256,
    *,
    churn_seconds: float = 60.0,
    churn_size: tuple[int, int] = (4, 8),
    seed: int = 0,
    repeat: int = 3,
    start_method: str | None = None,
    agents_per_process: int = 1,
    progress: Progress = _quiet,
) -> BenchResult:
    """Start-up time and memory of a run of ``agents``, and the server's RSS over a churn."""
    if agents < 2:
        raise ValueError("scale needs at least 2 agents (a producer and a consumer)")
    ctx = process_context(start_method)
    scale_rounds: list[dict[str, float | None]] = []
    leak_rounds: list[dict[str, float | None]] = []
    scale_checks = {"ok": True, "bought_all": True}
    leak_checks: dict[str, bool] = {}
    producers, consumers = churn_size
    for number in range(repeat):
        progress(f"scale {agents} agents: round {number + 1} of {repeat}")
        figures, checks = _scale_round(agents, seed, start_method, agents_per_process)
        scale_rounds.append(figures)
        scale_checks = {name: scale_checks[name] and ok for name, ok in checks.items()}
        progress(f"scale leak check, churn {producers}x{consumers}: round {number + 1} of {repeat}")
        churn = _churn_round(
            producers, consumers, churn_seconds, ctx, seed=seed + number, watch_server=True
        )
        rss_start, rss_end = churn.server_rss
        leak_rounds.append(
            {
                "seconds": churn.seconds,
                "bought_per_s": churn.bought / churn.seconds,
                "server_rss_start_mb": _mb(rss_start),
                "server_rss_end_mb": _mb(rss_end),
                "server_rss_growth_mb": _mb(rss_end - rss_start)
                if rss_start is not None and rss_end is not None
                else None,
            }
        )
        for name, ok in churn.checks().items():
            leak_checks[name] = leak_checks.get(name, True) and ok
    params = {
        "agents": agents,
        "agents_per_process": agents_per_process,
        "seed": seed,
        "churn_seconds": churn_seconds,
        "churn_size": f"{producers}x{consumers}",
        "leak_warmup_s": min(LEAK_WARMUP, churn_seconds / 10),
        "pss_available": os.path.exists("/proc/self/smaps_rollup"),
    }
    cases = [
        Case.of(f"{agents} agents", scale_rounds, scale_checks),
        Case.of(f"churn {producers}x{consumers}", leak_rounds, leak_checks),
    ]
    return BenchResult("scale", repeat, params, cases)
