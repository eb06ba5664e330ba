"""Shared guards: no test may leave a child process behind."""

from __future__ import annotations

import os
import time
from pathlib import Path

import psutil
import pytest

CONFORMANCE_DIR = Path(__file__).resolve().parents[2] / "shared" / "conformance"

# multiprocessing's own long-lived helpers are not a test's children to reap.
_HELPERS = ("forkserver", "resource_tracker")

# How long children get to exit on their own after a test.
REAP_GRACE_S = 5.0


def _stray_children() -> list[psutil.Process]:
    strays = []
    for child in psutil.Process().children(recursive=True):
        try:
            cmdline = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if not any(helper in cmdline for helper in _HELPERS):
            strays.append(child)
    return strays


def pytest_collection_modifyitems(config, items):
    """Slow tests (long stress runs) run only with MPMARKET_SLOW=1."""
    if os.environ.get("MPMARKET_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: set MPMARKET_SLOW=1 to run it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def no_orphans():
    """Fail a test that leaves processes behind, and kill them (like reap_children)."""
    yield
    deadline = time.monotonic() + REAP_GRACE_S
    strays = _stray_children()
    while strays and time.monotonic() < deadline:
        psutil.wait_procs(strays, timeout=0.2)
        strays = _stray_children()
    if strays:
        names = [f"{p.pid} {p.name()}" for p in strays]
        for process in strays:
            process.kill()
        psutil.wait_procs(strays, timeout=REAP_GRACE_S)
        pytest.fail(f"test left {len(strays)} processes behind: {names[:5]}")


@pytest.fixture
def conformance_dir() -> Path:
    """The course's public cases, beside the repository; skip when absent."""
    if not CONFORMANCE_DIR.is_dir():
        pytest.skip(f"course cases not found at {CONFORMANCE_DIR}")
    return CONFORMANCE_DIR
