"""An agent frozen (SIGSTOP) or killed mid-run: the run stops as stalled and names it.

A real run of a real workload; one agent process gets a real signal from
outside. The run must stop (a frozen agent waiting on the stop used to hang
the runner for ever), explain the stall naming that agent, exit with code 3
and leave nothing running.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.helpers import CLI_TIMEOUT_S

# The producer makes a tea every 0.1 s (so it spends its time in its make
# time, waiting on the run's stop); "frozen" and "packed" buy 60 each.
SESSIONS = ", ".join(['[{ add = "linden" }]'] * 60)
WORKLOAD = f"""
[market]
queue_size_per_producer = 3

[products]
linden = {{ kind = "Tea", name = "Linden", price = 9, type = "Herbal" }}

[[producers]]
name = "tea-maker"
republish_wait_time = 0.01
make = [{{ product = "linden", time = 0.1 }}]

[[consumers]]
name = "frozen"
retry_wait_time = 0.01
sessions = [{SESSIONS}]

[[consumers]]
name = "packed"
retry_wait_time = 0.01
sessions = [{SESSIONS}]
"""


def _children(pid: int, count: int) -> list[psutil.Process]:
    """The run's server and agent processes, in the order they were started."""
    deadline = time.monotonic() + CLI_TIMEOUT_S
    while time.monotonic() < deadline:
        children = psutil.Process(pid).children()
        if len(children) >= count:
            return sorted(children, key=lambda c: (c.create_time(), c.pid))
        time.sleep(0.05)
    raise AssertionError(f"the run did not start {count} processes")


@pytest.mark.parametrize(
    ("signum", "role", "per_process", "expected"),
    [
        (signal.SIGSTOP, "consumer", 1, ["consumer frozen (pid {pid}) is stopped (SIGSTOP"]),
        (signal.SIGSTOP, "producer", 1, ["producer tea-maker (pid {pid}) is stopped (SIGSTOP"]),
        (signal.SIGKILL, "producer", 1, ["producer tea-maker is not running (killed by SIGKILL)"]),
        (
            signal.SIGSTOP,
            "consumer",
            2,
            [
                "consumer frozen (pid {pid}) is stopped (SIGSTOP",
                "consumer packed (pid {pid}) is stopped (SIGSTOP",
            ],
        ),
    ],
    ids=["stopped-consumer", "stopped-producer", "killed-producer", "packed"],
)
def test_a_frozen_or_killed_agent_is_named_in_the_stall(
    tmp_path: Path, signum: int, role: str, per_process: int, expected: list[str]
) -> None:
    config = tmp_path / "frozen.toml"
    config.write_text(WORKLOAD)
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with out.open("w") as stdout, err.open("w") as stderr:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mpmarket",
                "run",
                str(config),
                "--quiet",
                "--stall-timeout",
                "1",
                "--agents-per-process",
                str(per_process),
            ],
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
    tree: list[psutil.Process] = []
    try:
        tree = _children(process.pid, 3 if per_process == 2 else 4)
        deadline = time.monotonic() + CLI_TIMEOUT_S
        while out.stat().st_size == 0 and time.monotonic() < deadline:
            time.sleep(0.02)  # the market is open: something was bought
        victim = tree[1] if role == "producer" else tree[2]
        victim.send_signal(signum)
        process.wait(CLI_TIMEOUT_S)
        _gone, alive = psutil.wait_procs(tree, timeout=10)
        assert alive == [], "the run left processes behind"
    finally:
        for child in tree:
            with contextlib.suppress(psutil.Error):
                child.send_signal(signal.SIGCONT)
                child.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    stderr_text = err.read_text()
    assert process.returncode == 3, stderr_text
    assert "stalled: no consumer made progress for" in stderr_text
    for line in expected:
        assert f"mpmarket: {line.format(pid=victim.pid)}" in stderr_text, stderr_text
