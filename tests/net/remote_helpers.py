"""Process trees of ``mpmarket serve`` / ``run --connect`` for tests, always reaped.

Every command runs in a session of its own (``start_new_session``) so that
cleanup can kill its whole tree with ``killpg``; stdout and stderr go to
files, so a long-lived server never blocks on a full pipe.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import run_cli

# A whole CLI command in a test: generous, as the machines are shared and noisy.
COMMAND_TIMEOUT_S = 60
# How long a server gets to print its start line.
SERVE_START_TIMEOUT_S = 20


def free_port() -> int:
    """A port nobody listens on now (bind to port 0 and let it go)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a test command: no inherited key, a private key folder."""
    env = {k: v for k, v in os.environ.items() if k != "MPMARKET_AUTHKEY"}
    env["XDG_RUNTIME_DIR"] = str(tmp_path / "runtime")
    env["HOME"] = str(tmp_path / "home")
    env.update(extra)
    return env


@dataclass
class Command:
    """A running ``mpmarket`` command whose output goes to files."""

    process: subprocess.Popen[bytes]
    out: Path
    err: Path

    @property
    def stdout(self) -> str:
        return self.out.read_text()

    @property
    def stderr(self) -> str:
        return self.err.read_text()

    def wait(self, timeout: float = COMMAND_TIMEOUT_S) -> int:
        return self.process.wait(timeout=timeout)

    def stop(self, signum: int = signal.SIGINT, timeout: float = COMMAND_TIMEOUT_S) -> int:
        self.process.send_signal(signum)
        return self.wait(timeout)


def _kill_tree(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)


@contextlib.contextmanager
def mpmarket(
    tmp_path: Path,
    label: str,
    *args: str | Path,
    env: dict[str, str],
    prefix: tuple[str, ...] = (),
) -> Iterator[Command]:
    """Start ``[prefix...] python -m mpmarket ARGS``; on exit, kill its tree if alive."""
    out, err = tmp_path / f"{label}.out", tmp_path / f"{label}.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(
            [*prefix, sys.executable, "-m", "mpmarket", *map(str, args)],
            stdout=stdout,
            stderr=stderr,
            env=env,
            start_new_session=True,
        )
    try:
        yield Command(process, out, err)
    finally:
        # The group outlives its leader when children linger: kill both ways.
        _kill_tree(process)


def wait_for_start_line(server: Command, timeout: float = SERVE_START_TIMEOUT_S) -> str:
    """The first line of ``serve``: once it is there, the server listens."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = server.stderr
        if "\n" in text:
            return text.splitlines()[0]
        if server.process.poll() is not None:
            raise AssertionError(f"serve exited {server.process.returncode}: {text}")
        time.sleep(0.05)
    raise AssertionError(f"serve printed nothing within {timeout} s")


def run_command(
    *args: str | Path, env: dict[str, str], timeout: float = COMMAND_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    """Run a short ``mpmarket`` command to its end, its tree killed on timeout."""
    return run_cli(*args, env=env, timeout=timeout)
