"""Faults through real processes: killed consumers, a killed or frozen server, stalls.

Each test runs ``mpmarket run`` as its own process tree and kills parts of it
from outside with real signals. Children of a run are found in the order they
were started: the server first, then the producers, then the consumers, in
workload order.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest

from mpmarket.core.load import load_workload
from mpmarket.core.workload import expected_purchases
from tests.helpers import bought_lines

# A tea producer that is quick, and one that is slow; "victim" takes three
# teas and then waits for a product that nobody makes, so it holds exactly
# three units when it is killed. The others just buy teas.
VICTIM_WORKLOAD = """
[market]
queue_size_per_producer = 3

[products]
linden = { kind = "Tea", name = "Linden", price = 9, type = "Herbal" }
unicorn = { kind = "Product", name = "Unicorn", price = 1000 }

[[producers]]
name = "tea-maker"
republish_wait_time = 0.01
make = [{ product = "linden", quantity = 1, time = 0.01 }]

[[consumers]]
name = "victim"
retry_wait_time = 0.01
sessions = [[{ add = "linden", quantity = 3 }, { add = "unicorn" }]]

[[consumers]]
name = "steady"
retry_wait_time = 0.01
sessions = [[{ add = "linden", quantity = 2 }], [{ add = "linden", quantity = 2 }]]

[[consumers]]
name = "late"
retry_wait_time = 0.01
sessions = [[{ add = "linden", quantity = 5 }, { remove = "linden", quantity = 1 }]]
"""

# prod1 fills its two slots with Arabica nobody wants before it would make
# the Linden that cons1 waits for: a deadlock.
DEADLOCK_WORKLOAD = """
[market]
queue_size_per_producer = 2

[products]
linden = { kind = "Tea", name = "Linden", price = 9, type = "Herbal" }
arabica = { kind = "Coffee", name = "Arabica", price = 3, acidity = 5.02, roast_level = "LIGHT" }

[[producers]]
name = "prod1"
republish_wait_time = 0.05
make = [{ product = "arabica", quantity = 3, time = 0.01 }, { product = "linden", time = 0.01 }]

[[consumers]]
name = "cons1"
retry_wait_time = 0.05
sessions = [[{ add = "linden" }]]
"""

# With --agents-per-process 2, "victim" and "victim2" share a process: each
# holds teas and waits for a unicorn when their process is killed.
PACKED_VICTIMS_WORKLOAD = """
[market]
queue_size_per_producer = 3

[products]
linden = { kind = "Tea", name = "Linden", price = 9, type = "Herbal" }
unicorn = { kind = "Product", name = "Unicorn", price = 1000 }

[[producers]]
name = "tea-maker"
republish_wait_time = 0.01
make = [{ product = "linden", quantity = 1, time = 0.01 }]

[[consumers]]
name = "victim"
retry_wait_time = 0.01
sessions = [[{ add = "linden", quantity = 3 }, { add = "unicorn" }]]

[[consumers]]
name = "victim2"
retry_wait_time = 0.01
sessions = [[{ add = "linden", quantity = 2 }, { add = "unicorn" }]]

[[consumers]]
name = "survivor"
retry_wait_time = 0.01
sessions = [[{ add = "linden" }], [{ add = "linden" }], [{ add = "linden" }]]
"""

LONG_RUN = ["--producers", "3", "--consumers", "6", "--sessions", "400"]


def _start(*args: str | Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "mpmarket", "run", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _children(process: subprocess.Popen[str]) -> list[psutil.Process]:
    """The run's server and agents in the order they were started.

    Under forkserver they are children of the fork server; multiprocessing's
    resource tracker (spawn, forkserver) is none of them.
    """
    found = []
    for child in psutil.Process(process.pid).children():
        try:
            cmdline = " ".join(child.cmdline())
        except psutil.Error:  # a zombie: an agent that finished already
            cmdline = ""
        if "resource_tracker" in cmdline:
            continue
        if "forkserver" in cmdline:
            found += child.children()
        else:
            found.append(child)
    return sorted(found, key=lambda child: (child.create_time(), child.pid))


def _wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _finish(process: subprocess.Popen[str], timeout: float) -> tuple[str, str, float]:
    """Wait for the run to exit; kill its whole tree if it does not."""
    started = time.monotonic()
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    return stdout, stderr, time.monotonic() - started


def _cleanup(process: subprocess.Popen[str], tree: list[psutil.Process]) -> None:
    for child in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()


def test_a_killed_consumer_gives_its_cart_back_and_the_others_finish(tmp_path):
    config = tmp_path / "victim.toml"
    config.write_text(VICTIM_WORKLOAD)
    log = tmp_path / "operations.log"
    report_path = tmp_path / "report.json"
    process = _start(config, "--quiet", "--log-file", log, "--json", report_path)
    tree: list[psutil.Process] = []
    try:
        # The victim's cart is cart 0 or another: find the add that got three.
        _wait_for(
            lambda: (
                log.exists()
                and "Tea(name='Linden', price=9, type='Herbal'), 3, 2.0) -> 3" in log.read_text()
            ),
            20,
            "the victim to hold three teas",
        )
        tree = _children(process)
        victim = tree[1 + 1 + 0]  # server, tea-maker, then the victim
        victim.send_signal(signal.SIGKILL)
        stdout, stderr, _ = _finish(process, 60)
    finally:
        _cleanup(process, tree)

    assert process.returncode == 1, stderr
    assert "consumer victim killed by SIGKILL after 0 of 1 sessions; 3 products" in stderr
    workload = load_workload(config)
    expected = expected_purchases(workload)
    for line in list(expected):
        if line.startswith("victim "):
            del expected[line]
    assert bought_lines(stdout) == expected  # the others' output is exact
    report = json.loads(report_path.read_text())
    assert report["exit_code"] == 1
    assert report["deaths"] == [
        {
            "name": "victim",
            "role": "consumer",
            "how": "killed by SIGKILL",
            "sessions_done": 0,
            "sessions": 1,
            "released": 3,
        }
    ]
    books = report["books"]
    assert books["published"] == books["on_sale"] + books["in_carts"] + books["ordered"]
    assert books["in_carts"] == 0 and report["violations"] == []


def test_a_killed_process_of_packed_agents_gives_back_every_cart_it_held(tmp_path):
    config = tmp_path / "packed.toml"
    config.write_text(PACKED_VICTIMS_WORKLOAD)
    log = tmp_path / "operations.log"
    report_path = tmp_path / "report.json"
    process = _start(
        config, "--quiet", "--agents-per-process", "2", "--log-file", log, "--json", report_path
    )
    tree: list[psutil.Process] = []
    linden = "Tea(name='Linden', price=9, type='Herbal')"
    try:
        _wait_for(
            lambda: (
                log.exists()
                and f"{linden}, 3, 2.0) -> 3" in (text := log.read_text())
                and f"{linden}, 2, 2.0) -> 2" in text
            ),
            20,
            "both victims to hold their teas",
        )
        tree = _children(process)
        assert len(tree) == 1 + 1 + 2  # server, tea-maker, the victims, the survivor
        tree[2].send_signal(signal.SIGKILL)
        stdout, stderr, _ = _finish(process, 60)
    finally:
        _cleanup(process, tree)

    assert process.returncode == 1, stderr
    assert bought_lines(stdout) == Counter({f"survivor bought {linden}": 3})
    report = json.loads(report_path.read_text())
    deaths = {death["name"]: death for death in report["deaths"]}
    assert set(deaths) == {"victim", "victim2"}
    assert {name: (d["how"], d["released"]) for name, d in deaths.items()} == {
        "victim": ("killed by SIGKILL", 3),
        "victim2": ("killed by SIGKILL", 2),
    }
    books = report["books"]
    assert books["published"] == books["on_sale"] + books["in_carts"] + books["ordered"]
    assert books["in_carts"] == 0 and report["violations"] == []


def test_a_killed_server_ends_the_run_within_seconds_with_code_4():
    process = _start(*LONG_RUN, "--quiet")
    tree: list[psutil.Process] = []
    try:
        assert " bought " in process.stdout.readline()
        tree = _children(process)
        assert len(tree) == 1 + 3 + 6
        tree[0].send_signal(signal.SIGKILL)  # the server
        _stdout, stderr, took = _finish(process, 30)
        assert process.returncode == 4, stderr
        assert took < 5.0 + 2.0  # the promise is 5 s; a margin for a loaded machine
        assert "the market server died (killed by SIGKILL)" in stderr
        assert "Traceback" not in stderr
        _gone, alive = psutil.wait_procs(tree, timeout=5)
        assert alive == []
    finally:
        _cleanup(process, tree)


def test_a_frozen_server_is_noticed_and_the_run_ends_with_code_4():
    process = _start(*LONG_RUN, "--quiet")
    tree: list[psutil.Process] = []
    try:
        assert " bought " in process.stdout.readline()
        tree = _children(process)
        tree[0].send_signal(signal.SIGSTOP)
        _stdout, stderr, _took = _finish(process, 40)
        assert process.returncode == 4, stderr
        assert "did not answer within" in stderr
        _gone, alive = psutil.wait_procs(tree, timeout=5)
        assert alive == []
    finally:
        _cleanup(process, tree)


def test_a_deadlock_is_stopped_and_explained(tmp_path):
    config = tmp_path / "deadlock.toml"
    config.write_text(DEADLOCK_WORKLOAD)
    process = _start(config, "--quiet", "--stall-timeout", "1")
    try:
        stdout, stderr, _ = _finish(process, 30)
    finally:
        _cleanup(process, [])
    assert process.returncode == 3, stderr
    assert stdout == ""
    assert "stalled: no consumer made progress for" in stderr
    assert "cons1 waits for Tea(name='Linden', price=9, type='Herbal') made by prod1" in stderr
    assert (
        "prod1 has 2 of 2 slots taken by Coffee(name='Arabica', price=3, acidity=5.02, "
        "roast_level='LIGHT') that no remaining consumer wants"
    ) in stderr


@pytest.mark.parametrize("start_method", ["fork", "spawn", "forkserver"])
def test_fail_fast_stops_at_the_first_death(tmp_path, start_method):
    config = tmp_path / "victim.toml"
    config.write_text(VICTIM_WORKLOAD)
    log = tmp_path / "operations.log"
    process = _start(
        config, "--quiet", "--fail-fast", "--log-file", log, "--start-method", start_method
    )
    tree: list[psutil.Process] = []
    try:
        _wait_for(lambda: log.exists() and ", 3, 2.0) -> 3" in log.read_text(), 30, "three teas")
        tree = _children(process)
        tree[1 + 1].send_signal(signal.SIGKILL)  # server, tea-maker, victim
        stdout, stderr, _ = _finish(process, 60)
    finally:
        _cleanup(process, tree)
    assert process.returncode == 1, stderr
    assert "consumer victim killed by SIGKILL" in stderr
    orders = Counter(line.split(" bought ")[0] for line in bought_lines(stdout).elements())
    assert "victim" not in orders
