"""How a child process notices that the process that started it has died.

A run's server and agents must not outlive the run, even when it is killed
with SIGKILL and cannot clean up. Under ``fork`` and ``spawn`` the run is the
child's parent; under ``forkserver`` the parent is the fork server, which
exits with the run. So a child watches both its parent (re-parenting means it
died) and the run's pid.
"""

from __future__ import annotations

import os

__all__ = ["Lifeline"]


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
