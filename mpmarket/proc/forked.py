"""Agent processes started by a bare ``os.fork()``, under the fork start method.

``multiprocessing.Process`` costs a run of hundreds of agents more than the
fork itself. ``start()`` first polls every child started before it (so a run
makes O(n²) ``waitpid`` calls: 31,000 for 250 agents), and the child, before
it runs a line of ours, drops the parent's set of children, reopens stdin and
runs the after-fork hooks: all of it writes to pages the child would
otherwise share with the runner, and the more agents came before, the more.
Measured on 256 agents (``bench scale --repeat 5``, twice each, alternated):
3.42 and 3.44 MB of PSS per agent, ready in 0.63 and 0.59 s with
``multiprocessing.Process``; 2.45 and 2.41 MB, 0.49 and 0.45 s with
``ForkedProcess``. An agent's private pages at its first line went from
1.74 MB (the first agents) to 1.94 MB (the last) down to 1.16 MB for all.

``ForkedProcess`` keeps the part of the ``Process`` interface a run uses
(``lifeline.ChildProcess``) with the same meaning: a sentinel that becomes
readable when the child ends, exit codes as ``Process`` gives them (negative
for a signal). It is not registered with multiprocessing, so
``multiprocessing.active_children()`` does not list it; whoever starts one
joins it (``run()`` does, whatever happens). Spawn and forkserver keep
``multiprocessing.Process``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
import traceback
import weakref
from collections.abc import Callable, Sequence
from multiprocessing import connection
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from typing import Any, NoReturn

from mpmarket.proc.interrupts import blocked
from mpmarket.proc.lifeline import ChildProcess
from mpmarket.proc.limits import out_of_resources

__all__ = ["ForkedProcess", "fork_batch", "start_child"]


class ForkedProcess:
    """A child running ``target(*args)`` in a bare fork of this process."""

    def __init__(self, target: Callable[..., object], name: str, args: tuple[Any, ...]) -> None:
        self.name = name
        self._target = target
        self._args = args
        self.pid: int | None = None
        self.sentinel = -1
        self._exitcode: int | None = None
        self._close_sentinel: weakref.finalize | None = None

    def __repr__(self) -> str:
        state = "initial" if self.pid is None else f"pid={self.pid} exitcode={self.exitcode}"
        return f"<ForkedProcess {self.name} {state}>"

    def start(self) -> None:
        if self.pid is not None:
            raise RuntimeError(f"process {self.name} was already started")
        _flush_std_streams()  # else the child writes out the parent's buffered output again
        read_end, write_end = os.pipe()  # the child holds the write end until it ends
        try:
            pid = os.fork()
        except OSError:  # EAGAIN (too many processes), ENOMEM: no descriptor leaks
            os.close(read_end)
            os.close(write_end)
            raise
        if pid == 0:
            _child(self, lambda: os.close(read_end))
        os.close(write_end)
        self._started(pid, read_end)

    def _started(self, pid: int, sentinel: int) -> None:
        self.pid, self.sentinel = pid, sentinel
        self._close_sentinel = weakref.finalize(self, os.close, sentinel)

    def _run_child(self) -> int:
        """The target's exit code, as ``multiprocessing`` would give it."""
        try:
            self._target(*self._args)
            return 0
        except SystemExit as exit_:
            if exit_.code is None:
                return 0
            if isinstance(exit_.code, int):
                return exit_.code
            print(exit_.code, file=sys.stderr)
            return 1
        except BaseException as error:
            why = out_of_resources(error)  # one line: no traceback for what is not a bug
            print(f"Process {self.name}:{f' {why}' if why else ''}", file=sys.stderr)
            if why is None:
                traceback.print_exc()
            return 1
        finally:
            _flush_std_streams()

    @property
    def exitcode(self) -> int | None:
        """None while the child runs; else its code, or minus the signal that ended it."""
        if self._exitcode is None and self.pid is not None:
            self._reap(os.WNOHANG)
        return self._exitcode

    def _reap(self, flags: int) -> None:
        assert self.pid is not None
        try:
            pid, status = os.waitpid(self.pid, flags)
        except ChildProcessError:  # reaped by someone else: its code is lost
            return
        if pid:
            self._exitcode = os.waitstatus_to_exitcode(status)

    def is_alive(self) -> bool:
        return self.pid is not None and self.exitcode is None

    def join(self, timeout: float | None = None) -> None:
        """Wait up to ``timeout`` seconds (None: for ever) for the child to end."""
        if self.pid is None:
            raise RuntimeError(f"process {self.name} was never started")
        if self.exitcode is None and connection.wait([self.sentinel], timeout):
            self._reap(0)  # it has closed its files; its status follows at once

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def _signal(self, signum: int) -> None:
        if self.pid is not None and self.exitcode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def close(self) -> None:
        """Close the sentinel; the process must have ended."""
        if self.is_alive():
            raise ValueError(f"cannot close process {self.name}: it is still running")
        if self._close_sentinel is not None:
            self._close_sentinel()


def fork_batch(
    processes: Sequence[ForkedProcess], kept: Sequence[int]
) -> tuple[int, OSError | None]:
    """Fork ``processes`` in one tight loop; how many started, and the error that stopped it.

    ``kept[i]`` is a descriptor of this process's that child ``i`` alone
    keeps (the writing end of its pipe to the runner): every other child of
    the batch closes it first thing, so that its reader sees the end when
    child ``i`` ends. The caller closes ``kept`` once the batch is forked.

    Why a batch: after each fork every page of this process is shared
    with the child, and the first write to each costs a copy. The Python
    between two forks of ``ForkedProcess.start`` (pipes, objects, the
    caller's bookkeeping) wrote to about 240 pages a fork, and a runner of
    320 agents spent 1.4 ms of CPU a fork where a bare loop of forks costs
    0.67 ms and 36 pages (measured with ``getrusage``, docs/performance.md);
    here everything is made before the loop, which does little but fork.

    The stop signals are held back until every child forked is recorded
    (``pid``, ``sentinel``): a KeyboardInterrupt (Python's own handler, when
    no ``Interrupts`` is installed) cannot leave a child nobody knows of.
    Even if the batch raises, the children forked have their ``pid`` set.
    """
    sentinels: list[tuple[int, int]] = []
    try:
        for _ in processes:
            sentinels.append(os.pipe())
    except OSError as no_pipe:  # out of files: nothing started, nothing leaked
        for read_end, write_end in sentinels:
            os.close(read_end)
            os.close(write_end)
        return 0, no_pipe
    _flush_std_streams()
    pids: list[int] = []
    failed: OSError | None = None
    with blocked():  # let in only once every child forked is recorded: a stop may raise
        try:
            for index, process in enumerate(processes):
                try:
                    pid = os.fork()
                except OSError as no_fork:  # EAGAIN (too many processes), ENOMEM
                    failed = no_fork
                    break
                if pid == 0:
                    _child(process, functools.partial(_leave_batch, index, sentinels, kept))
                pids.append(pid)
        finally:  # whatever raised in the loop (a signal's handler on another thread's)
            for index, (read_end, write_end) in enumerate(sentinels):
                os.close(write_end)
                if index < len(pids):
                    processes[index]._started(pids[index], read_end)
                else:
                    os.close(read_end)
    return len(pids), failed


def _child(process: ForkedProcess, leave: Callable[[], None]) -> NoReturn:
    """In the child: ``leave()`` (close the parent's files), run, end; never return.

    An exception out of here would unwind into the parent's code, in the
    child: the rest of the fork loop, a run's shutdown and report, a second
    exit. Printing the child's last words can raise (stderr a broken pipe),
    and so can closing a file: whatever happens, the child ends here.
    """
    code = 1
    try:
        leave()
        code = process._run_child()
    finally:
        os._exit(code)


def _leave_batch(index: int, sentinels: list[tuple[int, int]], kept: Sequence[int]) -> None:
    """In child ``index`` of a batch: close what belongs to the others (and its sentinel's reader)."""
    for other, (read_end, write_end) in enumerate(sentinels):
        os.close(read_end)
        if other != index:
            os.close(write_end)
            os.close(kept[other])


def _flush_std_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # closed, or None under pythonw
            stream.flush()


def start_child(
    ctx: BaseContext, target: Callable[..., object], name: str, args: tuple[Any, ...]
) -> ChildProcess:
    """Start ``target(*args)`` in a child: a bare fork under fork, else ``ctx.Process``.

    The child starts with the stop signals blocked (``interrupts.blocked``):
    ``target`` sets its handlers and lets them in (``interrupts.child_signals``),
    so a Ctrl-C sent to the whole group cannot catch the child half-born.
    """
    child: ChildProcess
    if ctx.get_start_method() == "fork":
        child = ForkedProcess(target, name, args)
    else:
        # Every concrete context has a Process class; typeshed's BaseContext has none.
        process_class: type[BaseProcess] = ctx.Process  # type: ignore[attr-defined]
        child = process_class(target=target, name=name, args=args, daemon=True)
    with blocked():
        child.start()
    return child
