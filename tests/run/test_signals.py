"""A signal at any moment: a run stops in order with exit 130, whenever it comes.

Real signals to a real ``mpmarket run``: while it forks its agents (the moment
a KeyboardInterrupt raised inside an at-fork hook used to be dropped), while
they attach, mid-market, during the shutdown, while the reports are written,
and while stdout's reader reads no more. SIGINT, SIGTERM and SIGHUP, to the
runner alone (a supervisor) or to its whole process group (a terminal), with
one process per agent and with packed agents. Each test asserts the exit
code, the --json report marked interrupted, no traceback and no process
left; it prints how long the stop took but asserts no timing (only a
generous bound).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from tests.helpers import CLI_TIMEOUT_S

# A bound on a stop, far above the promised 3 s: machines are shared and noisy.
STOP_BOUND_S = 20.0

MANY_AGENTS = ["run", "--producers", "20", "--consumers", "60", "--sessions", "40", "-q"]
LONG_RUN = ["run", "--producers", "3", "--consumers", "6", "--sessions", "400", "-q"]


class Run:
    """``mpmarket run ARGS`` in its own session, every descendant it ever had remembered."""

    def __init__(
        self,
        *args: str,
        stdout: int = subprocess.DEVNULL,
        stdin: int | None = None,
        preexec: Callable[[], None] | None = None,
    ) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mpmarket", *args],
            stdin=stdin,
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            preexec_fn=preexec,
        )
        self.seen: dict[int, psutil.Process] = {}

    def descendants(self) -> list[psutil.Process]:
        try:
            children = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        for child in children:
            self.seen.setdefault(child.pid, child)
        return children

    def wait_for(self, condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + CLI_TIMEOUT_S
        while not condition():
            assert self.process.poll() is None, f"ended before {what}: {self.stderr()}"
            assert time.monotonic() < deadline, f"no {what} within {CLI_TIMEOUT_S} s"
            time.sleep(0.005)

    def stderr(self) -> str:
        return self.process.stderr.read() if self.process.poll() is not None else ""

    def stop_with(self, signum: int, *, group: bool = False, again: bool = False) -> str:
        """Send ``signum`` (twice with ``again``); the run's stderr once it has ended."""
        self.descendants()
        sent = time.monotonic()
        for _ in range(2 if again else 1):
            if group:
                os.killpg(self.process.pid, signum)
            else:
                self.process.send_signal(signum)
        deadline = sent + STOP_BOUND_S
        while self.process.poll() is None and time.monotonic() < deadline:
            self.descendants()
            time.sleep(0.01)
        _stdout, stderr = self.process.communicate(timeout=max(deadline - time.monotonic(), 1))
        took = time.monotonic() - sent
        print(f"{signal.Signals(signum).name}: stopped in {took:.2f} s")
        return stderr

    def assert_nothing_left(self) -> None:
        _gone, alive = psutil.wait_procs(list(self.seen.values()), timeout=10)
        assert alive == [], f"left behind: {alive}"

    def cleanup(self) -> None:
        for child in [*self.seen.values(), *self.descendants()]:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process.communicate(timeout=10)


@contextlib.contextmanager
def running(*args: str, **kwargs) -> Run:
    run = Run(*args, **kwargs)
    try:
        yield run
    finally:
        run.cleanup()


def assert_interrupted(run: Run, stderr: str, report: Path, signum: int) -> dict:
    assert run.process.returncode == 130, stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    assert "mpmarket: interrupted" in stderr
    document = json.loads(report.read_text())
    assert document["interrupted"] and document["exit_code"] == 130
    assert document["stopped_by"] == signal.Signals(signum).name
    run.assert_nothing_left()
    return document


# multiprocessing's helpers (spawn, forkserver): not the run's server or agents.
HELPERS = ("forkserver", "resource_tracker")


def _ours(run: Run) -> list[psutil.Process]:
    """The run's server and agent processes, without multiprocessing's helpers.

    The helpers are the runner's children; under forkserver the agents are
    the fork server's, and carry its command line.
    """
    found = []
    for process in run.descendants():
        with contextlib.suppress(psutil.Error):
            helper = any(name in " ".join(process.cmdline()) for name in HELPERS)
            if not (helper and process.ppid() == run.process.pid):
                found.append(process)
    return found


def _catches(pid: int, signum: int) -> bool:
    """Whether process ``pid`` has a handler for ``signum`` (SigCgt of /proc/PID/status)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    return False


def _agents(run: Run) -> int:
    return len(_ours(run))


@pytest.mark.parametrize(
    ("signum", "per_process", "group"),
    [
        (signal.SIGINT, 1, False),
        (signal.SIGTERM, 1, False),
        (signal.SIGTERM, 2, False),
        (signal.SIGINT, 2, True),  # Ctrl-C on a terminal: the whole group, half-born children too
    ],
)
def test_a_signal_while_the_agents_are_forked_stops_the_run(tmp_path, signum, per_process, group):
    report = tmp_path / "r.json"
    args = [*MANY_AGENTS, "--json", str(report), "--agents-per-process", str(per_process)]
    with running(*args) as run:
        run.wait_for(lambda: _agents(run) >= 20, "20 processes")
        stderr = run.stop_with(signum, group=group)
        document = assert_interrupted(run, stderr, report, signum)
        assert document["deaths"] == []  # the children ignored the group's Ctrl-C
        assert document["timings"]["market_s"] == 0  # stopped before the market opened


def test_a_signal_while_spawned_agents_attach_stops_the_run(tmp_path):
    report = tmp_path / "r.json"
    args = [*LONG_RUN, "--start-method", "spawn", "--json", str(report)]
    with running(*args) as run:
        # The server and the 9 agents: they are starting Python and attaching.
        run.wait_for(lambda: _agents(run) >= 10, "every agent process")
        stderr = run.stop_with(signal.SIGTERM, group=True)
        document = assert_interrupted(run, stderr, report, signal.SIGTERM)
        assert document["deaths"] == []


def _first_line(run: Run) -> None:
    line = run.process.stdout.readline()
    assert " bought " in line, run.stderr()


@pytest.mark.parametrize(
    ("signum", "group", "again"),
    [(signal.SIGHUP, True, False), (signal.SIGHUP, False, False), (signal.SIGINT, False, True)],
)
def test_a_signal_mid_market_stops_the_run(tmp_path, signum, group, again):
    """SIGHUP: the terminal went away (to the group) or a supervisor's; twice: no more grace."""
    report = tmp_path / "r.json"
    with running(*LONG_RUN, "--json", str(report), stdout=subprocess.PIPE) as run:
        _first_line(run)
        stderr = run.stop_with(signum, group=group, again=again)
        document = assert_interrupted(run, stderr, report, signum)
        if not again:  # an orderly stop: the market closed, nobody killed
            assert document["deaths"] == [] and document["books"]["closed"]


def test_a_signal_during_the_shutdown_stops_the_run(tmp_path):
    """A frozen producer holds the shutdown in its drain (2 s): the signal comes there."""
    report = tmp_path / "r.json"
    config = tmp_path / "two-makers.toml"
    config.write_text(TWO_MAKERS)
    with running("run", str(config), "--json", str(report), stdout=subprocess.PIPE) as run:
        _first_line(run)
        # Not the server (it listens); of the agents, the first started is a
        # producer (either will do: they make the same).
        run.wait_for(lambda: _agents(run) >= 4, "server and agents")
        agents = []  # (started, pid, process) of each agent still there
        for process in _ours(run):
            with contextlib.suppress(psutil.Error):  # one may end while we look
                if not _listens(process):
                    agents.append((process.create_time(), process.pid, process))
        producer = min(agents, key=lambda agent: agent[:2])[2]
        producer.suspend()
        for _ in range(TO_BUY - 1):  # every order: the consumer is done, the shutdown begins
            _first_line(run)
        time.sleep(0.2)
        stderr = run.stop_with(signal.SIGTERM)
        with contextlib.suppress(psutil.NoSuchProcess):
            producer.resume()
        document = assert_interrupted(run, stderr, report, signal.SIGTERM)
        assert document["products_bought"] == TO_BUY


def test_a_frozen_producer_never_holds_the_shutdown(tmp_path):
    """multiprocessing.Event.set() waited for every waiter to wake: a frozen one hung it."""
    report = tmp_path / "r.json"
    config = tmp_path / "two-makers.toml"
    config.write_text(TWO_MAKERS)
    with running("run", str(config), "--json", str(report), stdout=subprocess.PIPE) as run:
        _first_line(run)
        run.wait_for(lambda: _agents(run) >= 4, "server and agents")
        agents = []  # (started, pid, process) of each agent still there
        for process in _ours(run):
            with contextlib.suppress(psutil.Error):  # one may end while we look
                if not _listens(process):
                    agents.append((process.create_time(), process.pid, process))
        producer = min(agents, key=lambda agent: agent[:2])[2]
        with contextlib.suppress(psutil.NoSuchProcess):
            producer.suspend()
        _stdout, stderr = run.process.communicate(timeout=STOP_BOUND_S)
        assert run.process.returncode == 0, stderr
        assert json.loads(report.read_text())["products_bought"] == TO_BUY
        run.assert_nothing_left()


def _listens(process: psutil.Process) -> bool:
    return any(c.status == psutil.CONN_LISTEN for c in process.net_connections("tcp"))


# Two producers of the same products: one frozen, the other makes them all.
TO_BUY = 40
TWO_MAKERS = f"""
[market]
queue_size_per_producer = 2

[products]
tea = {{ kind = "Tea", name = "Linden", price = 9, type = "Herbal" }}

[[producers]]
name = "maker-1"
republish_wait_time = 0.01
make = [ {{ product = "tea", quantity = {TO_BUY}, time = 0.02 }} ]

[[producers]]
name = "maker-2"
republish_wait_time = 0.01
make = [ {{ product = "tea", quantity = {TO_BUY}, time = 0.02 }} ]

[[consumers]]
name = "alice"
retry_wait_time = 0.01
sessions = [ {", ".join(['[ { add = "tea" } ]'] * TO_BUY)} ]
"""


def test_a_signal_while_a_report_is_written_cuts_that_write_only(tmp_path):
    """--json to a pipe nobody opens blocks the write: a signal still ends the run."""
    report = tmp_path / "r.json"
    os.mkfifo(report)
    html = tmp_path / "r.html"
    args = ["run", "--producers", "2", "--consumers", "3", "--sessions", "3", "-q"]
    with running(*args, "--json", str(report), "--html", str(html)) as run:
        run.wait_for(lambda: _agents(run) > 0, "the agents")
        run.wait_for(lambda: _agents(run) == 0, "the end of the agents")  # now the reports
        time.sleep(0.2)
        stderr = run.stop_with(signal.SIGTERM)
        assert run.process.returncode == 130, stderr
        assert f"cannot write {report}: interrupted" in stderr
        assert "Traceback" not in stderr and "mpmarket: interrupted" in stderr
        assert html.exists() or "cannot write" in stderr
        run.assert_nothing_left()


def test_a_signal_while_stdouts_reader_reads_no_more_stops_the_run(tmp_path):
    """A full pipe blocks the run's next line: a signal cuts that write and stops the run."""
    report = tmp_path / "r.json"
    with running(*LONG_RUN, "--json", str(report), stdout=subprocess.PIPE) as run:
        fd = run.process.stdout.fileno()

        def pipe_full() -> bool:
            waiting = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
            return int.from_bytes(waiting, sys.byteorder) >= 60_000

        run.wait_for(pipe_full, "a full pipe")
        time.sleep(0.3)
        stderr = run.stop_with(signal.SIGTERM)
        assert_interrupted(run, stderr, report, signal.SIGTERM)


def test_a_run_started_with_sighup_ignored_keeps_ignoring_it(tmp_path):
    """nohup: a hang-up changes nothing, the run goes to its end."""
    report = tmp_path / "r.json"
    args = ["run", "--producers", "2", "--consumers", "4", "--sessions", "20", "-q"]

    def nohup() -> None:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    with running(*args, "--json", str(report), stdout=subprocess.PIPE, preexec=nohup) as run:
        _first_line(run)
        os.killpg(run.process.pid, signal.SIGHUP)
        _stdout, stderr = run.process.communicate(timeout=CLI_TIMEOUT_S)
        assert run.process.returncode == 0, stderr
        document = json.loads(report.read_text())
        assert not document["interrupted"] and document["deaths"] == []
        run.assert_nothing_left()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_every_command_exits_130_when_a_signal_stops_it(tmp_path, signum):
    """validate blocked reading a stdin nobody writes: once Ctrl-C gave click's "Aborted!", 1."""
    with running("validate", "-", stdin=subprocess.PIPE) as run:
        # Sent once mpmarket's handlers are in (SIGTERM's: Python has one for SIGINT
        # from its start), not while Python starts, which would just kill it.
        run.wait_for(lambda: _catches(run.process.pid, signal.SIGTERM), "its signal handlers")
        stderr = run.stop_with(signum)
        assert run.process.returncode == 130, stderr
        assert "Traceback" not in stderr and "mpmarket: interrupted" in stderr


@pytest.mark.parametrize(("signum", "again"), [(signal.SIGHUP, False), (signal.SIGINT, True)])
def test_serve_stops_on_a_hang_up_and_on_two_ctrl_c(tmp_path, signum, again):
    key = tmp_path / "authkey"
    with running("serve", "--listen", "127.0.0.1:0", "--authkey-file", str(key), "-q") as run:
        run.wait_for(lambda: run.process.stderr.readline().startswith("mpmarket: serving"), "serve")
        stderr = run.stop_with(signum, again=again)
        assert run.process.returncode == 0, stderr
        assert "Traceback" not in stderr


IN_PROCESS_RUN = """
import gc, multiprocessing, os, sys, psutil
from mpmarket.core.generate import generate
from mpmarket.run.local import LocalRun

per_process, start_method = int(sys.argv[1]), sys.argv[2]
multiprocessing.get_context(start_method).Lock()  # multiprocessing's helpers, if any, first
files = len(os.listdir("/proc/self/fd"))
helpers = set(psutil.Process().children())
run = LocalRun(generate(60, 200), agents_per_process=per_process, start_method=start_method)
report = run.run()
del run
multiprocessing.active_children()  # multiprocessing forgets the ended: its files go with them
gc.collect()
left = set(psutil.Process().children()) - helpers  # a zombie too: run() joins every child
print(report.interrupted, len(left), len(os.listdir("/proc/self/fd")) - files)
"""


@pytest.mark.parametrize(("start_method", "per_process"), [("fork", 1), ("fork", 3), ("spawn", 1)])
def test_python_s_own_ctrl_c_while_an_in_process_run_forks_leaves_nothing(
    start_method, per_process
):
    """No Interrupts installed (LocalRun in a program of one's own): KeyboardInterrupt anywhere.

    A Ctrl-C held back while a batch forks is raised the moment it is let in:
    every process forked by then is tracked and stopped, none left (not even
    a zombie), no descriptor kept.
    """
    program = subprocess.Popen(
        [sys.executable, "-c", IN_PROCESS_RUN, str(per_process), start_method],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    seen: dict[int, psutil.Process] = {}
    try:
        deadline = time.monotonic() + CLI_TIMEOUT_S
        while len(seen) < 20 and program.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(psutil.NoSuchProcess):
                for child in psutil.Process(program.pid).children():
                    seen.setdefault(child.pid, child)
            time.sleep(0.002)
        assert len(seen) >= 20, program.stderr.read() if program.poll() is not None else ""
        program.send_signal(signal.SIGINT)
        stdout, stderr = program.communicate(timeout=CLI_TIMEOUT_S)
        assert stdout.split() == ["True", "0", "0"], stderr
        _gone, alive = psutil.wait_procs(list(seen.values()), timeout=10)
        assert alive == []
    finally:
        for child in seen.values():
            with contextlib.suppress(psutil.Error):
                child.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(program.pid, signal.SIGKILL)
        program.communicate(timeout=10)
