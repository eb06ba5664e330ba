"""A resource that runs out while a run starts: one line, a documented code, nothing left.

Real limits on a real ``mpmarket run``: ``resource.setrlimit`` in the child
before it runs (as ``prlimit`` does), or ``prlimit --pid`` on the running
runner. Too few open files for the run: the soft limit is raised up to the
hard limit, and said; a hard limit too low refuses the run before anything
starts. A pipe refused while the agents are forked: the agents started are
stopped, the server shut down, the --json report written. A thread an agent
process cannot start (an address-space limit): one line, no traceback. Out
of files as the reports are written: the one not written is named in one
line (printing it needs no module that was not loaded yet).

A fork refused (EAGAIN): RLIMIT_NPROC does not apply to root, and the
suite may run as root, so the run is put in a pids cgroup of the test's own
whose ``pids.max`` it reaches mid-spawn (skipped without root or the cgroup
v1 pids controller): the agents started are stopped, one line names the
agent that could not start.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from tests.helpers import CLI_TIMEOUT_S
from tests.run.test_signals import Run, running

MANY_AGENTS = ["run", "--producers", "20", "--consumers", "60", "--sessions", "3", "-q"]


def _limit(kind: int, soft: int, hard: int) -> Callable[[], None]:
    def preexec() -> None:
        resource.setrlimit(kind, (soft, hard))

    return preexec


def _finish(run: Run) -> str:
    """Wait for the run to end, remembering its processes; its stderr."""
    deadline = time.monotonic() + CLI_TIMEOUT_S
    while run.process.poll() is None and time.monotonic() < deadline:
        run.descendants()
        time.sleep(0.01)
    _stdout, stderr = run.process.communicate(timeout=max(deadline - time.monotonic(), 1))
    return stderr


def _assert_one_line(stderr: str, *parts: str) -> str:
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("mpmarket: error:")]
    assert len(errors) == 1, stderr
    for part in parts:
        assert part in errors[0], stderr
    return errors[0]


def _report(path: Path, code: int) -> dict:
    document = json.loads(path.read_text())
    assert document["exit_code"] == code
    return document


def test_a_hard_limit_too_low_refuses_the_run_before_anything_starts(tmp_path):
    report = tmp_path / "r.json"
    preexec = _limit(resource.RLIMIT_NOFILE, 64, 64)
    with running(*MANY_AGENTS, "--json", str(report), preexec=preexec) as run:
        stderr = _finish(run)
        assert run.process.returncode == 1, stderr
        line = _assert_one_line(stderr, "too many open files", "the limit is 64", "ulimit -Hn")
        assert _report(report, 1)["failures"] == [line.removeprefix("mpmarket: error: ")]
        assert len(run.seen) <= 1  # not one agent; at most multiprocessing's helper
        run.assert_nothing_left()


def test_a_soft_limit_too_low_is_raised_to_what_the_run_needs_and_said(tmp_path):
    report = tmp_path / "r.json"
    preexec = _limit(resource.RLIMIT_NOFILE, 64, 4096)
    with running(*MANY_AGENTS, "--json", str(report), preexec=preexec) as run:
        stderr = _finish(run)
        assert run.process.returncode == 0, stderr
        assert "mpmarket: raised the open-files limit (ulimit -n) from 64 to " in stderr
        assert "Traceback" not in stderr and "error" not in stderr, stderr
        assert _report(report, 0)["failures"] == []
        run.assert_nothing_left()


def test_packing_is_suggested_when_it_would_be_enough(tmp_path):
    args = ["run", "-p", "5", "-c", "10", "--sessions", "3", "-q", "--json", str(tmp_path / "r")]
    with running(*args, preexec=_limit(resource.RLIMIT_NOFILE, 64, 64)) as run:
        stderr = _finish(run)
        assert run.process.returncode == 1, stderr
        _assert_one_line(stderr, "too many open files", "--agents-per-process")
    with running(
        *args, "--agents-per-process", "5", preexec=_limit(resource.RLIMIT_NOFILE, 64, 64)
    ) as run:
        stderr = _finish(run)
        assert run.process.returncode == 0, stderr
        run.assert_nothing_left()


def test_out_of_files_while_the_agents_are_forked_stops_the_run_in_order(tmp_path):
    """The limit lowered on the runner mid-spawn (``prlimit --pid``): its next pipe fails."""
    report = tmp_path / "r.json"
    with running(*MANY_AGENTS, "--json", str(report)) as run:
        run.wait_for(lambda: len(run.descendants()) >= 20, "20 processes")
        runner = psutil.Process(run.process.pid)
        runner.send_signal(signal.SIGSTOP)
        try:
            if len(run.descendants()) >= 1 + 20 + 60:
                pytest.skip("every agent was forked before the limit could be lowered")
            held = runner.num_fds()
            subprocess.run(
                ["prlimit", f"--pid={runner.pid}", f"--nofile={held}:{held}"], check=True
            )
        finally:
            runner.send_signal(signal.SIGCONT)
        stderr = _finish(run)
        assert run.process.returncode == 1, stderr
        line = _assert_one_line(stderr, "cannot start agent ", "too many open files")
        assert f"the limit is {held}, the run needs about " in line
        document = _report(report, 1)
        assert document["failures"] == [line.removeprefix("mpmarket: error: ")]
        run.assert_nothing_left()


@pytest.mark.parametrize("start_method", ["fork", "spawn", "forkserver"])
def test_an_agent_process_that_cannot_start_its_threads_says_so_in_one_line(tmp_path, start_method):
    """An address-space limit (``ulimit -v``): ten threads of 8 MiB stacks do not fit.

    Under every start method: under spawn and forkserver ``multiprocessing``
    itself would print the thread's traceback.
    """
    report = tmp_path / "r.json"
    args = ["run", "-p", "5", "-c", "20", "--sessions", "3", "-q", "--agents-per-process", "10"]
    args += ["--start-method", start_method]
    preexec = _limit(resource.RLIMIT_AS, 100 << 20, resource.RLIM_INFINITY)
    with running(*args, "--json", str(report), preexec=preexec) as run:
        stderr = _finish(run)
        assert "Traceback" not in stderr, stderr
        if run.process.returncode == 0:
            pytest.skip("the limit was enough here: nothing ran out")
        assert run.process.returncode in (1, 4), stderr  # an agent, or the server, ran out
        assert "out of memory or threads" in stderr or "out of threads" in stderr, stderr
        _report(report, run.process.returncode)
        run.assert_nothing_left()


def test_out_of_files_as_the_reports_are_written_names_the_one_not_written(tmp_path):
    """The --json report goes to a FIFO: the runner waits there, its agents gone, and then
    its limit is lowered below what it holds: the --html file cannot be opened."""
    fifo, html = tmp_path / "r.json", tmp_path / "r.html"
    os.mkfifo(fifo)
    args = ["run", "-p", "2", "-c", "3", "--sessions", "3", "-q", "--json", str(fifo)]
    with running(*args, "--html", str(html)) as run:
        run.wait_for(lambda: len(run.descendants()) >= 5, "the agents")
        run.wait_for(lambda: not run.descendants(), "the agents and the server to end")
        time.sleep(0.5)  # to reach the FIFO's open (either way, a report is named below)
        subprocess.run(["prlimit", f"--pid={run.process.pid}", "--nofile=3:"], check=True)
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        written = b""
        deadline = time.monotonic() + CLI_TIMEOUT_S
        try:
            while time.monotonic() < deadline:
                try:
                    chunk = os.read(reader, 1 << 16)
                except BlockingIOError:
                    chunk = None
                if chunk:
                    written += chunk
                elif run.process.poll() is not None:
                    break
                else:
                    time.sleep(0.01)
        finally:
            os.close(reader)
        stderr = _finish(run)
        assert run.process.returncode == 1, stderr
        if written:  # the usual case: the FIFO was open before the limit fell
            assert json.loads(written)["failures"] == []
            _assert_one_line(stderr, f"cannot write {html}: Too many open files")
        else:
            assert f"cannot write {fifo}: Too many open files" in stderr, stderr
        assert not html.exists()
        run.assert_nothing_left()


PIDS_CGROUPS = Path("/sys/fs/cgroup/pids")  # the cgroup v1 pids controller, where mounted


@pytest.fixture
def pids_cgroup() -> Iterator[Path]:
    """A pids cgroup of this test's own: a real process limit even for root.

    RLIMIT_NPROC does not hold root back; a cgroup's ``pids.max`` holds
    everyone (and counts threads). Removed at the end, once emptied.
    """
    if os.geteuid() != 0 or not (PIDS_CGROUPS / "cgroup.procs").exists():
        pytest.skip("needs root and the cgroup v1 pids controller")
    group = PIDS_CGROUPS / f"mpmarket-test-{os.getpid()}-{time.monotonic_ns()}"
    try:
        group.mkdir()
    except OSError as error:
        pytest.skip(f"cannot make a pids cgroup here: {error}")
    try:
        yield group
    finally:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                group.rmdir()
                break
            except OSError:  # its last processes are still being reaped
                time.sleep(0.05)


def test_out_of_processes_while_the_agents_are_forked_stops_the_run_in_order(tmp_path, pids_cgroup):
    """A cgroup's pids.max reached mid-spawn: the fork fails (EAGAIN), one line names the agent."""
    (pids_cgroup / "pids.max").write_text("16")
    report = tmp_path / "r.json"

    def join_the_cgroup() -> None:
        (pids_cgroup / "cgroup.procs").write_text(str(os.getpid()))

    with running(*MANY_AGENTS, "--json", str(report), preexec=join_the_cgroup) as run:
        stderr = _finish(run)
        assert run.process.returncode == 1, stderr
        line = _assert_one_line(stderr, "cannot start agent ", "too many processes", "pids.max")
        document = _report(report, 1)
        assert document["failures"] == [line.removeprefix("mpmarket: error: ")]
        assert 1 < len(run.seen) < 80  # some agents started, and were stopped
        run.assert_nothing_left()
