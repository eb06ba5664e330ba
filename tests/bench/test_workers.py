"""The benchmarks' processes in the run's fleet: barrier, results, failures, lifelines.

Real processes throughout; every wait is bounded, and leaving ``_Fleet``
stops whatever is left (tests/conftest.py fails a test that leaves any).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import psutil
import pytest

from mpmarket.bench.workers import _Fleet, _parent_gone
from mpmarket.errors import RunError

WAIT = 60.0  # generous: machines are shared


def _answer(value: object, ready: Callable[[], None]) -> object:
    ready()
    return value


def _fail(ready: Callable[[], None]) -> None:
    raise RunError("no market here")


def _exit(ready: Callable[[], None]) -> None:
    raise SystemExit(3)


def _never_ready(ready: Callable[[], None]) -> None:
    time.sleep(WAIT)


def _work_until_orphaned(ready: Callable[[], None]) -> None:
    """A churn's loop: work until the benchmark that started it is gone."""
    ready()
    deadline = time.monotonic() + WAIT
    while not _parent_gone() and time.monotonic() < deadline:
        time.sleep(0.01)


def _run(bench_fleet: _Fleet, timeout: float = WAIT) -> list[object]:
    bench_fleet.wait_ready(timeout)
    bench_fleet.release()
    return bench_fleet.results(timeout)


@pytest.mark.parametrize("start_method", ["fork", "forkserver", "spawn"])
def test_results_come_in_spawn_order_and_the_stop_runs_on_stop(start_method):
    ctx = multiprocessing.get_context(start_method)
    stopped: list[bool] = []
    with _Fleet(ctx, on_stop=lambda: stopped.append(True)) as bench_fleet:
        for value in ("first", {"n": 2}, None, (1, 2.5)):
            bench_fleet.spawn(f"bench-{value}", _answer, value)
        assert _run(bench_fleet) == ["first", {"n": 2}, None, (1, 2.5)]
        assert {agent.role for agent in bench_fleet.fleet.agents} == {"benchmark process"}
    assert stopped == [True]
    assert all(process.exitcode == 0 for process in bench_fleet.fleet.processes())


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (_fail, "benchmark process bench-1 failed: no market here"),
        (_exit, r"benchmark process bench-1 died \(exit code 3\)"),
        (_never_ready, "1 benchmark processes did not answer within 1 s"),
    ],
    ids=["failed", "died", "timeout"],
)
def test_a_failure_a_death_or_a_timeout_is_a_run_error(body, message):
    with _Fleet(multiprocessing.get_context("fork")) as bench_fleet:
        bench_fleet.spawn("bench-0", _answer, 0)
        bench_fleet.spawn("bench-1", body)
        with pytest.raises(RunError, match=message):
            _run(bench_fleet, timeout=1.0 if body is _never_ready else WAIT)
    # The stop ended every process, the one at the barrier and the one that hung.
    assert all(process.exitcode is not None for process in bench_fleet.fleet.processes())


def test_a_result_that_does_not_pickle_is_a_failure():
    with _Fleet(multiprocessing.get_context("fork")) as bench_fleet:
        bench_fleet.spawn("bench-0", _answer, lambda: None)
        with pytest.raises(RunError, match=r"benchmark process bench-0 failed: .*pickle"):
            _run(bench_fleet)


# A benchmark killed with SIGKILL cannot stop its processes: they must notice.
KILLED_BENCHMARK = """
import multiprocessing, sys, time
from mpmarket.bench.workers import _Fleet
from tests.bench.test_workers import _work_until_orphaned

start_method, release = sys.argv[1], sys.argv[2] == "release"
bench_fleet = _Fleet(multiprocessing.get_context(start_method))
for index in range(2):
    bench_fleet.spawn(f"bench-{index}", _work_until_orphaned)
bench_fleet.wait_ready(60)
if release:
    bench_fleet.release()
print(*[p.pid for p in bench_fleet.fleet.processes()], flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
@pytest.mark.parametrize("moment", ["barrier", "release"])
def test_a_killed_benchmark_leaves_no_process_behind(start_method, moment):
    benchmark = subprocess.Popen(
        [sys.executable, "-c", KILLED_BENCHMARK, start_method, moment],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    workers: list[psutil.Process] = []
    try:
        line = benchmark.stdout.readline() if benchmark.stdout else ""
        workers = [psutil.Process(int(pid)) for pid in line.split()]
        assert len(workers) == 2, line
        benchmark.kill()
        benchmark.wait(timeout=WAIT)
        _gone, alive = psutil.wait_procs(workers, timeout=WAIT / 2)
        assert alive == []
    finally:
        for worker in workers:
            with contextlib.suppress(psutil.Error):
                worker.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(benchmark.pid, signal.SIGKILL)
        benchmark.communicate(timeout=WAIT)


def _wait_after_ready(ready: Callable[[], None]) -> None:
    ready()
    time.sleep(WAIT)


@pytest.mark.parametrize("start_method", ["fork", "forkserver", "spawn"])
def test_a_benchmark_process_dies_of_sigterm_as_an_agent_does(start_method):
    """Started with the stop signals held back, it lets them in once it set its own.

    Held back for good, SIGTERM (a supervisor, the fleet's terminate) waited
    in vain and only SIGKILL ended the process.
    """
    with _Fleet(multiprocessing.get_context(start_method)) as bench_fleet:
        bench_fleet.spawn("bench-0", _wait_after_ready)
        bench_fleet.wait_ready(WAIT)
        (process,) = bench_fleet.fleet.processes()
        assert process.pid is not None
        os.kill(process.pid, signal.SIGTERM)
        with pytest.raises(RunError, match="bench-0 died"):
            bench_fleet.results(WAIT)
        assert process.exitcode == -signal.SIGTERM
