"""Killing or stopping ``mpmarket run`` leaves no process behind."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

# A workload long enough to be interrupted mid-run.
LONG_RUN = ["run", "--producers", "3", "--consumers", "6", "--sessions", "400", "--quiet"]


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "mpmarket", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _wait_for_first_line(process: subprocess.Popen[str]) -> str:
    line = process.stdout.readline()
    assert " bought " in line, process.stderr.read()
    return line


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _cleanup(process: subprocess.Popen[str], tree: list[psutil.Process]) -> None:
    for child in [*tree, *_descendants(process.pid)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.communicate(timeout=10)


@pytest.mark.parametrize(
    ("signum", "code", "per_process"),
    [(signal.SIGINT, 130, 1), (signal.SIGTERM, 130, 1), (signal.SIGINT, 130, 4)],
)
def test_interrupt_stops_everything_and_prints_the_summary(signum, code, per_process):
    # Not quiet: the summary is wanted.
    process = _start(*LONG_RUN[:-1], "--agents-per-process", str(per_process))
    tree: list[psutil.Process] = []
    try:
        _wait_for_first_line(process)
        tree = _descendants(process.pid)
        assert len(tree) >= (1 + 3 + 6 if per_process == 1 else 1 + 1 + 2)
        interrupted_at = time.monotonic()
        process.send_signal(signum)
        _stdout, stderr = process.communicate(timeout=15)
        took = time.monotonic() - interrupted_at
        assert process.returncode == code, stderr
        assert "interrupted" in stderr and "products bought" in stderr
        _gone, alive = psutil.wait_procs(tree, timeout=5)
        assert alive == [], f"left behind after {took:.1f} s: {alive}"
    finally:
        _cleanup(process, tree)


@pytest.mark.parametrize(("per_process", "processes"), [(1, 1 + 3 + 6), (4, 1 + 1 + 2)])
def test_a_killed_run_takes_its_server_and_agents_down(per_process, processes):
    process = _start(*LONG_RUN, "--agents-per-process", str(per_process))
    tree: list[psutil.Process] = []
    try:
        _wait_for_first_line(process)
        tree = _descendants(process.pid)
        assert len(tree) >= processes
        process.kill()
        process.wait(timeout=10)
        # Orphans re-parent to init: they must notice and exit on their own.
        _gone, alive = psutil.wait_procs(tree, timeout=20)
        assert alive == [], f"orphans: {alive}"
    finally:
        _cleanup(process, tree)
