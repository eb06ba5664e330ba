"""The ``mpmarket`` command: the click group and the console script's entry point.

Each command lives in its own module (``cli/run.py``, ``cli/serve.py``, ...)
and the group imports it only when that command runs, as click's
documentation shows for lazily loaded subcommands: ``mpmarket --version`` and
``mpmarket validate`` never import the runner, the views or the benchmarks.
Listing the commands (``mpmarket --help``) imports them all, for their help.

Each command's help ends with the exit codes of ``mpmarket.cli.exitcodes``.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import sys
from typing import TYPE_CHECKING, Any

import click

from mpmarket import __version__
from mpmarket.cli.exitcodes import ExitCode
from mpmarket.cli.output import StdoutLostError, finish_stdout, guard_streams
from mpmarket.errors import MarketUnavailableError, MpmarketError
from mpmarket.proc.interrupts import CHILD_IGNORED, Interrupts

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["COMMANDS", "ExitCode", "LazyGroup", "cli", "main"]

# Every command: its name -> "module:attribute", imported when it runs.
COMMANDS = {
    "bench": "mpmarket.cli.bench:bench",
    "gen": "mpmarket.cli.gen:gen",
    "run": "mpmarket.cli.run:run",
    "serve": "mpmarket.cli.serve:serve",
    "simulate": "mpmarket.cli.simulate:simulate_command",
    "status": "mpmarket.cli.status:status",
    "stress": "mpmarket.cli.stress:stress",
    "validate": "mpmarket.cli.validate:validate",
}


class LazyGroup(click.Group):
    """A group whose commands are imported by name, only when asked for."""

    def __init__(
        self, *args: Any, lazy_commands: dict[str, str] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_commands = dict(lazy_commands or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy_commands])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy_commands:
            return self._load(cmd_name)
        return super().get_command(ctx, cmd_name)

    def _load(self, cmd_name: str) -> click.Command:
        module_name, _, attribute = self.lazy_commands[cmd_name].partition(":")
        command = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{self.lazy_commands[cmd_name]} is not a click command")
        return command


@click.group(
    cls=LazyGroup,
    lazy_commands=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, prog_name="mpmarket")
def cli() -> None:
    """A producer-consumer marketplace of real processes."""


def main() -> None:
    """Entry point of the console script: one exit code, whatever happens.

    The streams are guarded (``output.guard_streams``: a stdout that fails
    raises StdoutLostError, a stderr that fails is dropped) and the stop signals
    handled (``Interrupts``): a command that does not defer them gets
    KeyboardInterrupt, which exits 130 with one line; ``run``, ``stress`` and
    ``serve`` defer them and stop in order.
    """
    guard_streams()
    interrupts = Interrupts().install()
    code = _invoke()
    with interrupts.deferred():  # the end is not interrupted: a signal now is only recorded
        lost = finish_stdout()
        if lost is not None and code == ExitCode.OK:
            code = lost.exit_code
            if not lost.reader_gone and not lost.reported:
                _print_error(str(lost))
        # The code is decided. Python puts its default handlers back as it
        # finalizes, so a second Ctrl-C then would end the process by SIGINT:
        # the terminal's signals are ignored from here (SIGTERM keeps its
        # default, for a supervisor facing an exit that hangs).
        for signum in CHILD_IGNORED:
            signal.signal(signum, signal.SIG_IGN)
        sys.exit(code)


# click's shell completion: ``eval "$(_MPMARKET_COMPLETE=bash_source mpmarket)"``.
COMPLETE_ENV_VAR = "_MPMARKET_COMPLETE"
_COMPLETION_SHELLS = ("bash", "zsh", "fish")  # click's own


def _completion_error() -> str | None:
    """What is wrong with $_MPMARKET_COMPLETE; None when it is unset, empty or click's to act on.

    click takes ``SHELL_source`` (print the script) and ``SHELL_complete``
    (what the script asks while completing), and exits 1 without a word on
    anything else: a typo in a shell's start-up file went unexplained.
    """
    value = os.environ.get(COMPLETE_ENV_VAR)
    if not value:
        return None
    shell, _, action = value.partition("_")
    if action in ("source", "complete"):
        from click.shell_completion import get_completion_class  # only when completing

        if get_completion_class(shell) is not None:
            return None
    from mpmarket.proc.context import shown_value  # only on the way out: it loads multiprocessing

    return (
        f"${COMPLETE_ENV_VAR}: expected SHELL_source (or SHELL_complete) with SHELL one of "
        f"{', '.join(_COMPLETION_SHELLS)}, got {shown_value(value)} (docs/usage.md)"
    )


def _invoke() -> int:
    """Run the command line; its exit code."""
    completion_error = _completion_error()
    if completion_error is not None:
        _print_error(completion_error)
        return ExitCode.USAGE
    try:
        result = cli.main(prog_name="mpmarket", standalone_mode=False)
        return result if isinstance(result, int) else ExitCode.OK
    except SystemExit as exit_:
        return _exit_code(exit_.code)
    except click.exceptions.Abort as abort:  # click's form of KeyboardInterrupt
        if isinstance(abort.__context__, KeyboardInterrupt):
            return _interrupted()
        _print_error("aborted")
        return ExitCode.RUN_FAILED
    except KeyboardInterrupt:
        return _interrupted()
    except click.ClickException as error:
        with contextlib.suppress(OSError, ValueError, StdoutLostError):
            error.show()
        return error.exit_code
    except StdoutLostError as lost:
        if not lost.reader_gone and not lost.reported:
            _print_error(str(lost))
        return lost.exit_code
    except MarketUnavailableError as error:  # pragma: no cover - commands map their own
        _print_error(str(error))
        return ExitCode.UNREACHABLE
    except MpmarketError as error:  # pragma: no cover - commands map their own
        _print_error(str(error))
        return ExitCode.RUN_FAILED


def _exit_code(code: object) -> int:
    """What ``sys.exit(code)`` exits with."""
    if code is None:
        return ExitCode.OK
    if isinstance(code, int):
        return code
    _print_error(str(code))
    return ExitCode.RUN_FAILED


def _interrupted() -> int:
    """A command stopped by a signal before it could defer it."""
    _stderr().print("[yellow]mpmarket: interrupted[/]")
    return ExitCode.INTERRUPTED


def _print_error(message: str) -> None:
    _stderr().print(f"[bold red]mpmarket: error:[/] {message}", highlight=False, soft_wrap=True)


def _stderr() -> Console:
    """A rich console on stderr, imported only on the way out."""
    from mpmarket.view.console import new_console

    return new_console(stderr=True)
