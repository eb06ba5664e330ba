"""The ``mpmarket`` command: the click group and the console script's entry point.

Each command lives in its own module (``cli/run.py``, ``cli/serve.py``, ...)
and the group imports it only when that command runs, as click's
documentation shows for lazily loaded subcommands: ``mpmarket --version`` and
``mpmarket validate`` never import the runner, the views or the benchmarks.
Listing the commands (``mpmarket --help``) imports them all, for their help.

Each command's help ends with the exit codes of ``mpmarket.cli.exitcodes``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import click

from mpmarket import __version__
from mpmarket.cli.exitcodes import ExitCode, fail
from mpmarket.errors import MarketUnavailableError, MpmarketError

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
    """Entry point of the console script."""
    try:
        cli.main(prog_name="mpmarket", standalone_mode=True)
    except MarketUnavailableError as error:  # pragma: no cover - commands map their own
        fail(_stderr(), str(error), ExitCode.UNREACHABLE)
    except MpmarketError as error:  # pragma: no cover - commands map their own
        fail(_stderr(), str(error), ExitCode.RUN_FAILED)


def _stderr() -> Console:
    """A rich console on stderr, imported only on the way out of a failure."""
    from rich.console import Console

    return Console(stderr=True)
