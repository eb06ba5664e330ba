"""The exit codes every mpmarket command shares, and the one-line failure.

\b
  0    success (serve: stopped by Ctrl-C, SIGTERM or SIGHUP)
  1    the run failed: an agent died or reported an error, or an invariant broke
       (serve: cannot listen on its address; bench: a check did not hold);
       or stdout or a report file could not be written (closed, full, encoding);
       or the system refused what a run needs (open files, processes, memory)
  2    bad usage, a bad workload or a bad authkey (one line names what is wrong)
  3    the workload deadlocks: simulate predicts it can never finish, or a run
       stalled (no consumer made progress for --stall-timeout seconds)
  4    the market cannot be reached, refused the authkey, runs another version,
       or died during the run
  130  interrupted (Ctrl-C, SIGTERM or SIGHUP): stopped in order
  141  stdout's reader went away (as `yes | head`): stopped quietly, in order
"""

from __future__ import annotations

import sys
from enum import IntEnum
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:  # neither imported at run time: --version and validate stay light
    from rich.console import Console

    from mpmarket.run.report import RunReport

__all__ = ["EPILOG", "ExitCode", "fail"]

# The table above, for the end of every command's --help.
EPILOG = "Exit codes (the same for every command):\n\n" + __doc__.split("\n\n", 1)[1]


class ExitCode(IntEnum):
    OK = 0
    RUN_FAILED = 1
    USAGE = 2
    DEADLOCK = 3
    UNREACHABLE = 4
    INTERRUPTED = 130
    READER_GONE = 141  # 128 + SIGPIPE, what a shell reports for `yes | head`

    @classmethod
    def of(cls, report: RunReport) -> ExitCode:
        """The exit code of a run, the gravest reason first."""
        if report.interrupted:
            return cls.INTERRUPTED
        if report.attach_failed or report.market_lost:
            return cls.UNREACHABLE
        if report.stall:
            return cls.DEADLOCK
        if report.failures or report.deaths or report.violations:
            return cls.RUN_FAILED
        return cls.OK


def fail(console: Console, message: str, code: ExitCode) -> NoReturn:
    """One red line on stderr, then exit with ``code``: never a traceback."""
    console.print(f"[bold red]mpmarket: error:[/] {message}", highlight=False, soft_wrap=True)
    sys.exit(code)
