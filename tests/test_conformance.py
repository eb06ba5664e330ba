"""The course's ten public cases through ``mpmarket run NN.in``.

They are read from ``../shared/conformance`` beside the repository and never
copied into it. The cases are bound by their make and wait times, not by CPU,
so all ten run at once (as separate process trees) to keep the suite short.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import CONFORMANCE_DIR
from tests.helpers import bought_lines

CASES = [f"{n:02d}" for n in range(1, 11)]
CASE_TIMEOUT_S = 150


@pytest.fixture(scope="module")
def course_runs():
    """Start every case at once; yield case -> (returncode, stdout, stderr)."""
    if not CONFORMANCE_DIR.is_dir():
        pytest.skip(f"course cases not found at {CONFORMANCE_DIR}")
    processes = {
        case: subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mpmarket",
                "run",
                str(CONFORMANCE_DIR / f"{case}.in"),
                "--quiet",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        for case in CASES
        if (CONFORMANCE_DIR / f"{case}.in").exists()
    }
    results = {}
    try:
        for case, process in processes.items():
            stdout, stderr = process.communicate(timeout=CASE_TIMEOUT_S)
            results[case] = (process.returncode, stdout, stderr)
    finally:
        for process in processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.communicate()
    return results


@pytest.mark.timeout(CASE_TIMEOUT_S + 30)
@pytest.mark.parametrize("case", CASES)
def test_course_case(course_runs, case):
    if case not in course_runs:
        pytest.skip(f"{case}.in not present")
    returncode, stdout, stderr = course_runs[case]
    assert returncode == 0, stderr
    expected = Counter(Path(CONFORMANCE_DIR / f"{case}.ref.out").read_text().splitlines())
    assert bought_lines(stdout) == expected
