"""The resources a run's processes need: open files estimated and raised, failures explained.

A run holds two descriptors per agent process in the runner (its pipe and its
sentinel), one socket per agent in its server, and every agent process
forked inherits what the runner held at its fork. Measured on 80 agents:
the runner 174 files, the server 98 (20 processes of 4 agents: 54 and 98).
``open_files_needed`` estimates the most any one of them needs, with a
margin; ``ensure_open_files`` raises the soft limit (``ulimit -n``) up to the
hard limit when it is below that, as servers do (and says so on stderr),
and refuses the run at once (``ResourceLimitError``) when even the hard
limit is below it: a run that would fail half-started is told before
anything starts.

``spawn_error`` turns the OSError of a pipe or a fork that failed (too many
open files, too many processes, out of memory) into the one line a user
reads: what could not start, which resource ran out, its limit, and what to
do. ``out_of_resources`` tells such an error raised in a child (a thread
that cannot start, memory that cannot be had) from a bug, so that the child
says it in one line instead of a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import sys
from dataclasses import dataclass

from mpmarket.errors import RunError

__all__ = [
    "FILES_MARGIN",
    "FORK_BATCH",
    "FilesNeeded",
    "ResourceLimitError",
    "ensure_open_files",
    "open_files",
    "open_files_needed",
    "out_of_resources",
    "spawn_error",
]

# The runner's and the server's own files (standard streams, the wake-up
# pipe, the listener, the runner's connection, a log): 14 to 18 measured.
FILES_MARGIN = 32

# Agent processes forked in one tight loop (``forked.fork_batch``): the pipes
# of a batch are made before it, so while it forks the runner holds two more
# descriptors for each of its processes (their writing ends).
FORK_BATCH = 32


class ResourceLimitError(RunError):
    """The system refused a resource a run needs: open files, processes, memory."""


@dataclass(frozen=True)
class FilesNeeded:
    """The open files a run needs, about: as planned, and at the least.

    ``floor``: with every agent of a role in one process (``--agents-per-process``
    can bring the runner down to it, not the server, which holds a connection
    per agent whatever the packing).
    """

    needed: int
    floor: int
    processes: int

    def advice(self, limit: int, *, hard: bool = False) -> str:
        """What to do: raise the limit, or pack agents when that would be enough."""
        raise_it = "raise the hard limit (ulimit -Hn, as root)" if hard else "raise it: ulimit -n"
        if self.floor < self.needed and self.floor <= limit:
            return f"{raise_it}, or use --agents-per-process"
        return f"{raise_it}, or run fewer agents"


def open_files_needed(processes: int, agents: int, agents_per_process: int = 1) -> FilesNeeded:
    """The open files the busiest process of a run needs, about.

    The runner: two per agent process, and two more for each process of a
    batch being forked (``FORK_BATCH``); the last agent process forked: the
    same, plus a connection per agent it runs; the server: one per agent.
    Each of them also holds what the runner holds now (``open_files()``):
    the server and the agents inherit it.
    """
    held = open_files() + FILES_MARGIN
    return FilesNeeded(
        held + max(2 * (processes + min(processes, FORK_BATCH)) + agents_per_process, agents),
        held + agents + 2 * 2,  # two processes, a pipe and a sentinel each
        processes,
    )


def open_files() -> int:
    """How many files this process has open (0 where the system does not say)."""
    for listing in ("/proc/self/fd", "/dev/fd"):
        with contextlib.suppress(OSError):
            return len(os.listdir(listing)) - 1  # less the listing's own descriptor
    return 0


def ensure_open_files(files: FilesNeeded) -> str | None:
    """Raise the soft open-files limit to ``files.needed`` if the hard limit allows.

    Says so on stderr, and returns that note (None when nothing was done).
    Raises ResourceLimitError when the hard limit is below it. Children
    started after this inherit the new limit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = files.needed
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return None
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise ResourceLimitError(
            f"too many open files for this run: it needs about {needed}, the limit is "
            f"{soft} and cannot be raised above {hard} (the hard limit): "
            f"{files.advice(hard, hard=True)}"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    note = (
        f"raised the open-files limit (ulimit -n) from {soft} to {needed} "
        f"for {files.processes} agent processes"
    )
    with contextlib.suppress(OSError, ValueError, AttributeError):  # stderr closed or None
        print(f"mpmarket: {note}", file=sys.stderr, flush=True)
    return note


def spawn_error(what: str, error: OSError, files: FilesNeeded | None = None) -> ResourceLimitError:
    """The one-line error of ``what`` (e.g. "agent cons41") that could not start."""
    soft_files = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if error.errno == errno.EMFILE:
        if files is not None:
            about = f", the run needs about {files.needed}"
            advice = files.advice(soft_files)
        else:
            about, advice = "", "raise it: ulimit -n"
        why = f"too many open files (the limit is {_limit(soft_files)}{about}: {advice})"
    elif error.errno == errno.ENFILE:
        why = "the system's table of open files is full (fs.file-max): end other programs"
    elif error.errno == errno.EAGAIN:
        soft_procs = resource.getrlimit(resource.RLIMIT_NPROC)[0]
        why = (
            f"too many processes (the limit of this user is {_limit(soft_procs)}, or a "
            "cgroup's pids.max): raise it with ulimit -u, or use --agents-per-process"
        )
    elif error.errno == errno.ENOMEM:
        why = "out of memory (or over ulimit -v): use --agents-per-process, or run fewer agents"
    else:
        why = error.strerror or str(error)
    return ResourceLimitError(f"cannot start {what}: {why}")


def _limit(value: int) -> str:
    return "unlimited" if value == resource.RLIM_INFINITY else str(value)


def out_of_resources(error: BaseException) -> str | None:
    """One line for an error that means the system ran out of something; else None."""
    if isinstance(error, MemoryError):
        return "out of memory (or over ulimit -v)"
    if isinstance(error, RuntimeError) and "can't start new thread" in str(error):
        return "cannot start a thread: out of memory or threads (ulimit -v, ulimit -u)"
    if isinstance(error, OSError) and error.errno in _RESOURCE_ERRNOS:
        return f"out of resources: {error.strerror}"
    return None


_RESOURCE_ERRNOS = (errno.EMFILE, errno.ENFILE, errno.EAGAIN, errno.ENOMEM)
