"""Process lifetimes: children that notice their run died, and bounded stops.

A run's server and agents must not outlive the run, even when it is killed
with SIGKILL and cannot clean up. Under ``fork`` and ``spawn`` the run is the
child's parent; under ``forkserver`` the parent is the fork server, which
exits with the run. So a child watches both its parent (re-parenting means it
died) and the run's pid.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from multiprocessing import connection
from typing import Protocol

__all__ = ["ChildProcess", "Lifeline", "exit_when_orphaned", "join_all", "stop_processes"]


# The lifecycle constants, defined once for runs, servers and benchmarks.

# Bounds of the escalating shutdown: ask (close the market), then wait this
# long for every agent, then terminate, then kill.
STOP_GRACE = 2.0
TERMINATE_GRACE = 1.0

# How often a child waiting on its parent (an agent at the start barrier, a
# run's server) checks that the parent is still alive, so that a killed run
# leaves nothing behind. Shorter notices sooner, at one more wake-up each time.
PARENT_CHECK_INTERVAL = 0.5


class ChildProcess(Protocol):
    """What a run uses of a child process: ``multiprocessing.Process`` or ``ForkedProcess``."""

    @property
    def name(self) -> str: ...

    @property
    def pid(self) -> int | None: ...

    @property
    def sentinel(self) -> int: ...

    @property
    def exitcode(self) -> int | None: ...

    def start(self) -> None: ...

    def is_alive(self) -> bool: ...

    def join(self, timeout: float | None = None) -> None: ...

    def terminate(self) -> None: ...

    def kill(self) -> None: ...


class Lifeline:
    """Created in the child; ``alive()`` is False once the run is gone."""

    def __init__(self, run_pid: int) -> None:
        self.run_pid = run_pid
        self.parent_pid = os.getppid()

    def alive(self) -> bool:
        if os.getppid() != self.parent_pid:
            return False
        try:
            os.kill(self.run_pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # it exists, owned by someone else
        return True


def exit_when_orphaned(run_pid: int) -> None:
    """Watch, on a daemon thread, that the run ``run_pid`` lives; exit the process if not.

    For a server the run started: killed with its run, it would serve nobody.
    """

    def watch() -> None:
        lifeline = Lifeline(run_pid)
        while lifeline.alive():
            time.sleep(PARENT_CHECK_INTERVAL)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def join_all(processes: Sequence[ChildProcess], timeout: float) -> None:
    """Wait until every process has exited or ``timeout`` has passed."""
    deadline = time.monotonic() + timeout
    alive = [p for p in processes if p.exitcode is None]
    while alive:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        connection.wait([p.sentinel for p in alive], remaining)
        alive = [p for p in alive if p.exitcode is None]


def stop_processes(processes: Sequence[ChildProcess], grace: float, step: float) -> None:
    """Escalate, every step bounded: wait ``grace``, terminate, wait ``step``, kill."""
    join_all(processes, grace)
    for process in processes:
        if process.exitcode is None:
            process.terminate()
    join_all(processes, step)
    for process in processes:
        if process.exitcode is None:
            process.kill()
    join_all(processes, step)
