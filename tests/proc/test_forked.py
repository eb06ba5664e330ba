"""ForkedProcess: a bare fork that keeps multiprocessing.Process's meaning."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from mpmarket.proc.forked import ForkedProcess, fork_batch, start_child

pytestmark = pytest.mark.timeout(60)


def _return() -> None:
    return None


def _exit_with(code: object) -> None:
    raise SystemExit(code)


def _fail() -> None:
    raise RuntimeError("the agent broke")


def _sleep() -> None:
    time.sleep(60)


def _write(path: str, text: str) -> None:
    with open(path, "w") as file:
        file.write(text)


def _python(script: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -c script`` in a process of its own, bounded; its output as text."""
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env
    )


@pytest.fixture
def children() -> Iterator[list[ForkedProcess]]:
    """Processes a test starts; killed and reaped whatever the test does."""
    started: list[ForkedProcess] = []
    yield started
    for child in started:
        child.kill()
        child.join(10)


def _run(children: list[ForkedProcess], target, *args) -> ForkedProcess:
    child = ForkedProcess(target, "agent-0", args)
    children.append(child)
    child.start()
    child.join(30)
    return child


@pytest.mark.parametrize(
    ("target", "args", "code"),
    [(_return, (), 0), (_exit_with, (None,), 0), (_exit_with, (3,), 3), (_exit_with, ("bad",), 1)],
)
def test_exit_codes_are_those_of_multiprocessing(children, target, args, code):
    child = _run(children, target, *args)
    assert child.exitcode == code
    assert not child.is_alive()


def test_the_child_runs_the_target_in_another_process(children, tmp_path):
    out = tmp_path / "out"
    child = _run(children, _write, str(out), "written by the child")
    assert child.exitcode == 0
    assert out.read_text() == "written by the child"
    assert child.pid != os.getpid()


def test_an_exception_is_exit_code_1_with_its_traceback(children, capfd):
    child = _run(children, _fail)
    assert child.exitcode == 1
    err = capfd.readouterr().err
    assert "Process agent-0:" in err
    assert "RuntimeError: the agent broke" in err


def test_a_message_given_to_system_exit_goes_to_stderr(children, capfd):
    _run(children, _exit_with, "cannot reach market")
    assert "cannot reach market" in capfd.readouterr().err


@pytest.mark.parametrize(
    ("stop", "signum"), [("kill", signal.SIGKILL), ("terminate", signal.SIGTERM)]
)
def test_a_signal_is_a_negative_exit_code(children, stop, signum):
    child = ForkedProcess(_sleep, "agent-0", ())
    children.append(child)
    child.start()
    child.join(0.05)
    assert child.is_alive() and child.exitcode is None
    getattr(child, stop)()
    child.join(30)
    assert child.exitcode == -signum


def test_the_sentinel_is_ready_when_the_child_ends(children):
    child = ForkedProcess(_sleep, "agent-0", ())
    children.append(child)
    child.start()
    assert not multiprocessing.connection.wait([child.sentinel], 0.05)
    child.kill()
    assert multiprocessing.connection.wait([child.sentinel], 30) == [child.sentinel]


def test_multiprocessing_does_not_count_it_among_its_children(children):
    child = ForkedProcess(_sleep, "agent-0", ())
    children.append(child)
    child.start()
    assert child not in multiprocessing.active_children()
    assert not multiprocessing.active_children()


def test_close_frees_the_sentinel_only_once_the_child_ended(children):
    child = ForkedProcess(_sleep, "agent-0", ())
    children.append(child)
    child.start()
    with pytest.raises(ValueError, match="still running"):
        child.close()
    child.kill()
    child.join(30)
    child.close()
    with pytest.raises(OSError):
        os.fstat(child.sentinel)


def test_start_twice_and_join_before_start_are_errors(children):
    child = ForkedProcess(_return, "agent-0", ())
    with pytest.raises(RuntimeError, match="never started"):
        child.join(0)
    children.append(child)
    child.start()
    with pytest.raises(RuntimeError, match="already started"):
        child.start()


def test_start_child_forks_bare_only_under_fork(tmp_path):
    out = tmp_path / "out"
    forked = start_child(multiprocessing.get_context("fork"), _write, "a", (str(out), "fork"))
    spawned = start_child(
        multiprocessing.get_context("spawn"), _write, "b", (str(out) + "2", "spawn")
    )
    try:
        forked.join(30)
        spawned.join(30)
        assert isinstance(forked, ForkedProcess)
        assert isinstance(spawned, multiprocessing.get_context("spawn").Process)
        assert (forked.exitcode, spawned.exitcode) == (0, 0)
        assert out.read_text() == "fork"
    finally:
        for child in (forked, spawned):
            child.kill()
            child.join(10)


def test_output_the_parent_buffered_before_the_fork_is_written_once():
    script = (
        "import sys\n"
        "from mpmarket.proc.forked import ForkedProcess\n"
        "print('written before the fork')\n"  # buffered: stdout is a pipe
        "child = ForkedProcess(print, 'agent-0', ('written by the child',))\n"
        "child.start(); child.join(30)\n"
        "print('exit', child.exitcode)\n"
    )
    buffered = {name: value for name, value in os.environ.items() if name != "PYTHONUNBUFFERED"}
    done = _python(script, env=buffered)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["written before the fork", "written by the child", "exit 0"]


def _report_then(pipe_writer, seconds: float) -> None:
    pipe_writer.send(os.getpid())
    time.sleep(seconds)


def _batch(children: list[ForkedProcess], seconds: list[float]):
    """A batch forked as the fleet forks one: a pipe each, its writer kept by its child only."""
    readers, writers, batch = [], [], []
    for index, wait in enumerate(seconds):
        reader, writer = multiprocessing.Pipe(duplex=False)
        readers.append(reader)
        writers.append(writer)
        batch.append(ForkedProcess(_report_then, f"agent-{index}", (writer, wait)))
    children.extend(batch)
    kept = [writer.fileno() for writer in writers]
    started, error = fork_batch(batch, kept)
    for writer in writers:
        writer.close()
    return started, error, readers, batch, kept


def test_a_batch_child_ending_is_seen_while_its_siblings_live(children):
    """Neither its sentinel nor its pipe is held open by a sibling forked after it, or before."""
    started, error, readers, batch, _ = _batch(children, [60, 0, 60])
    assert (started, error) == (3, None)
    assert [reader.recv() for reader in readers] == [child.pid for child in batch]
    middle = batch[1]
    assert multiprocessing.connection.wait([middle.sentinel], 30) == [middle.sentinel]
    with pytest.raises(EOFError):
        readers[1].recv()
    middle.join(30)
    assert middle.exitcode == 0
    assert batch[0].is_alive() and batch[2].is_alive()
    assert not multiprocessing.connection.wait([batch[0].sentinel, readers[2]], 0.05)
    batch[0].kill()
    assert multiprocessing.connection.wait([readers[0]], 30) == [readers[0]]


def test_a_batch_child_holds_its_own_writing_end_and_no_other(children):
    """The others' pipe writers and every sentinel's reading end are closed in each child."""
    started, _, readers, batch, kept = _batch(children, [60, 60, 60])
    assert started == 3
    for reader in readers:
        reader.recv()
    for index, child in enumerate(batch):
        held = {int(fd) for fd in os.listdir(f"/proc/{child.pid}/fd")}
        assert kept[index] in held
        assert not held & ({*kept} - {kept[index]}), index
        assert not held & {sibling.sentinel for sibling in batch}, index


def test_a_batch_out_of_files_starts_nothing_and_leaks_nothing():
    """The sentinels' pipes come before any fork: a limit reached there starts no child."""
    script = (
        "import os, resource, time\n"
        "from mpmarket.proc.forked import ForkedProcess, fork_batch\n"
        "held = len(os.listdir('/proc/self/fd')) - 1\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (held + 5, held + 5))\n"
        "batch = [ForkedProcess(time.sleep, f'a{i}', (0,)) for i in range(4)]\n"
        "started, error = fork_batch(batch, [])\n"
        "print(started, error.errno == 24, len(os.listdir('/proc/self/fd')) - 1 - held)\n"
    )
    result = _python(script)
    assert result.stdout.split() == ["0", "True", "0"], result.stderr


@pytest.mark.parametrize("start", ["child.start()", "fork_batch([child], [])"])
@pytest.mark.parametrize("target", ["_fail, 'agent-0', ()", "_exit_with, 'agent-0', ('why',)"])
def test_a_child_never_returns_into_its_parents_code(start, target):
    """Whatever the child's last words cost (here stderr is a broken pipe), it ends there.

    A child that raised out of its fork would run on in its parent's code:
    the rest of the caller, a run's shutdown, its report, a second exit.
    """
    script = (
        "import os, sys\n"
        "from mpmarket.proc.forked import ForkedProcess, fork_batch\n"
        "from tests.proc.test_forked import _exit_with, _fail\n"
        "read, write = os.pipe(); os.close(read); os.dup2(write, 2)\n"  # nobody reads stderr
        "sys.stderr = open(2, 'w', buffering=1)\n"
        f"child = ForkedProcess({target})\n"
        "try:\n"
        f"    {start}\n"
        "finally:\n"
        "    print('after the fork in', os.getpid(), flush=True)\n"
        "child.join(30)\n"
        "print('exit', child.exitcode, flush=True)\n"
    )
    result = _python(script)
    lines = result.stdout.splitlines()
    assert lines[-1:] == ["exit 1"], result.stdout
    assert len([line for line in lines if line.startswith("after the fork")]) == 1, lines
