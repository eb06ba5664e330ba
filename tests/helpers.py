"""Running the ``mpmarket`` command as a real subprocess, always bounded."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

# A whole CLI run in a test: generous, as the machines are shared and noisy.
CLI_TIMEOUT_S = 90


def run_cli(
    *args: str | Path, timeout: float = CLI_TIMEOUT_S, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m mpmarket ARGS``; kill its whole process group on timeout."""
    command = [sys.executable, "-m", "mpmarket", *map(str, args)]
    with subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise
        return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def bought_lines(stdout: str) -> Counter[str]:
    """The multiset of `` bought `` lines of a run's stdout."""
    return Counter(line for line in stdout.splitlines() if " bought " in line)
