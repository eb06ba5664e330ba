"""docs/remote_bench.py end to end with tiny sizes: two hosts, one serve.

The script builds its own namespaces (veth pairs, private addresses that
exist only inside them) and deletes them; this test checks its outcome (exit
0, every run ready, the books exact, the JSON figures there), never a timing,
and removes whatever the script left if it failed or hung. Needs root and
``ip netns``; skipped with the reason elsewhere.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(180)

SCRIPT = Path(__file__).resolve().parents[2] / "docs" / "remote_bench.py"
RUN_TIMEOUT_S = 150  # the whole script, tiny sizes, on a loaded machine


def _need_namespaces() -> None:
    """Skip unless root can add (and delete) a network namespace here."""
    if shutil.which("ip") is None:
        pytest.skip("the ip command (iproute2) is not installed")
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    probe = f"mrbprobe{os.getpid()}"
    added = subprocess.run(["ip", "netns", "add", probe], capture_output=True, timeout=20)
    if added.returncode != 0:
        pytest.skip(f"ip netns add failed: {added.stderr.decode().strip()}")
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=20)


def _remove_leftovers(pid: int) -> None:
    """The namespaces of the script's run (tagged with its pid), and what runs in them."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=20)
    tag = f"mrb{pid}"
    for name in (line.split()[0] for line in listed.stdout.splitlines() if line.strip()):
        if name == f"{tag}s" or name.startswith(f"{tag}h"):
            pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True)
            for inside in pids.stdout.split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(inside), signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=20)


def test_remote_bench_tiny(tmp_path):
    _need_namespaces()
    figures_file = tmp_path / "figures.json"
    script = subprocess.Popen(
        [
            *(sys.executable, str(SCRIPT), "--hosts", "2", "--producers", "4"),
            *("--consumers", "8", "--sessions", "1", "--json", str(figures_file)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = script.communicate(timeout=RUN_TIMEOUT_S)
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    finally:
        if script.poll() is None:  # it cleans up on SIGTERM; else kill it
            script.terminate()
            try:
                script.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                script.kill()
                script.communicate(timeout=10)
        _remove_leftovers(script.pid)
    assert script.returncode == 0, f"{out}\n{err}"
    assert "books exact: yes" in out
    figures = json.loads(figures_file.read_text())
    assert figures["books_exact"] and figures["all_ready"] and figures["all_exit_0"]
    assert len(figures["consumer_runs"]) == len(figures["producer_runs"]) == 2
    assert sum(run["agents"] for run in figures["consumer_runs"]) == 8
    assert sum(run["agents"] for run in figures["producer_runs"]) == 4
    for run in figures["consumer_runs"] + figures["producer_runs"]:
        assert run["exit_code"] == 0 and run["ready"]
        assert run["startup_s"] > 0 and run["wall_s"] > 0
    for spread in (figures["consumer_startup_s"], figures["producer_startup_s"]):
        assert spread["median"] is not None and spread["max"] >= spread["median"]
    assert figures["serve"]["exit_code"] == 0 and figures["serve"]["balanced"]
    assert figures["products_bought"] == figures["serve"]["products_bought"] > 0
    assert f"mrb{script.pid}" not in listed.stdout  # the script removed its namespaces
