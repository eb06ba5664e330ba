"""The click options and parameter types that mpmarket's commands share, defined once."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import click
from click.core import ParameterSource

from mpmarket.cli.exitcodes import ExitCode, fail
from mpmarket.net.authkey import ENV_VAR
from mpmarket.net.oplog import DEFAULT_BACKUPS, DEFAULT_MAX_BYTES, LEVELS
from mpmarket.net.tls import ENV_CA, TLSFileError, trust
from mpmarket.net.wire import DEFAULT_PORT, parse_address
from mpmarket.proc.context import (
    START_METHOD_ENV_VAR,
    START_METHODS,
    platform_start_method,
    shown_value,
    start_method_from_env,
)

if TYPE_CHECKING:
    from rich.console import Console

    from mpmarket.net.wire import Address

__all__ = [
    "ADDRESS",
    "DEFAULT_ADDRESS",
    "DEFAULT_CONNECT_TIMEOUT_S",
    "DURATION",
    "SHARD",
    "WORKER_KEY_HELP",
    "BadEnvironmentValue",
    "FiniteFloat",
    "agents_per_process_option",
    "authkey_option",
    "connect_timeout_option",
    "html_option",
    "json_option",
    "log_options",
    "market_option",
    "quiet_option",
    "start_method_option",
    "tls_ca_option",
    "tls_server_options",
    "trace_option",
    "use_tls_ca",
    "workload_options",
]

# How long run --connect and status retry by default while the server is
# not there yet (a CI job may start before the server's).
DEFAULT_CONNECT_TIMEOUT_S = 10.0

DEFAULT_ADDRESS = f"127.0.0.1:{DEFAULT_PORT}"


class AddressType(click.ParamType):
    """``HOST:PORT`` (or ``[IPv6]:PORT``), as an address tuple."""

    name = "HOST:PORT"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple):
            return value
        try:
            return parse_address(value)
        except ValueError:
            self.fail(f"expected HOST:PORT such as {DEFAULT_ADDRESS}, got {value!r}", param, ctx)


class ShardType(click.ParamType):
    """``K/N``: the K-th of N shards, 1 <= K <= N."""

    name = "K/N"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple):
            return value
        k, sep, n = str(value).partition("/")
        if sep and k.isdigit() and n.isdigit() and 1 <= int(k) <= int(n):
            return int(k), int(n)
        self.fail(f"expected K/N with 1 <= K <= N such as 2/4, got {value!r}", param, ctx)


class BadEnvironmentValue(click.ClickException):
    """A value read from an environment variable is wrong: one line naming it, exit 2.

    Nothing on the command line is wrong, so no usage block: the line names
    the variable, what it may hold and what it holds (control characters and
    bytes that are not UTF-8 escaped).
    """

    exit_code = ExitCode.USAGE

    def show(self, file: IO[Any] | None = None) -> None:
        prefix = click.style("mpmarket: error:", fg="red", bold=True)
        click.echo(f"{prefix} {self.format_message()}", file=file, err=True)


def from_environment(param: click.Parameter | None, ctx: click.Context | None) -> str | None:
    """The environment variable a parameter's value came from, if it came from one."""
    if param is None or ctx is None or param.name is None:
        return None
    if ctx.get_parameter_source(param.name) is not ParameterSource.ENVIRONMENT:
        return None
    return param.envvar if isinstance(param.envvar, str) else None


class StartMethodType(click.Choice):
    """A start method; from ``$MPMARKET_START_METHOD``, checked by ``start_method_from_env``."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if from_environment(param, ctx) == START_METHOD_ENV_VAR:
            try:
                return start_method_from_env({START_METHOD_ENV_VAR: value}) or value
            except ValueError as error:
                raise BadEnvironmentValue(str(error)) from None
        return super().convert(value, param, ctx)


class FiniteFloat(click.FloatRange):
    """A number in a range, and finite: the type of every float option.

    ``nan`` passes every comparison of a range and ``inf`` every lower bound,
    and neither is a time, a rate or a size: refused in one line (exit 2).
    """

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"expected a finite number, got {value!r}", param, ctx)
        return number


class DurationType(FiniteFloat):
    """Seconds: a finite number above 0 (``nan`` and ``inf`` are no durations)."""

    def __init__(self) -> None:
        super().__init__(min=0, min_open=True)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        variable = from_environment(param, ctx)
        try:
            seconds = click.FloatRange.convert(self, value, param, ctx)
            if not math.isfinite(seconds):
                self.fail(f"expected a finite number of seconds above 0, got {value!r}", param, ctx)
        except click.BadParameter:
            if variable is None:
                raise
            raise BadEnvironmentValue(
                f"${variable}: expected a number of seconds above 0, got {shown_value(value)}"
            ) from None
        return seconds


ADDRESS = AddressType()
SHARD = ShardType()
DURATION = DurationType()

# --authkey-file of the commands that attach to a served market (run, status).
WORKER_KEY_HELP = (
    f"File holding the market's authkey (else ${ENV_VAR}, else the default file that serve writes)."
)


def authkey_option(help_text: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    return click.option(
        "--authkey-file",
        type=click.Path(dir_okay=False, path_type=Path),
        help=help_text,
    )


def tls_ca_option(command: Callable[..., None]) -> Callable[..., None]:
    """--tls-ca of the commands that attach to a served market (run, status)."""
    return click.option(
        "--tls-ca",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar=ENV_CA,
        help=f"Speak TLS to the market and verify its certificate and host name with "
        f"this CA file (else ${ENV_CA}); for a market served with --tls-cert.",
    )(command)


def use_tls_ca(console: Console, address: Address, ca_file: Path | None) -> None:
    """Speak TLS to ``address``, verified with ``ca_file`` (if given); a bad file is exit 2."""
    if ca_file is None:
        return
    try:
        trust(address, ca_file)
    except TLSFileError as error:
        fail(console, str(error), ExitCode.USAGE)


def tls_server_options(command: Callable[..., None]) -> Callable[..., None]:
    """serve's --tls-cert and --tls-key."""
    options = [
        click.option(
            "--tls-cert",
            type=click.Path(dir_okay=False, path_type=Path),
            help="Serve TLS only, with this certificate file (PEM, its chain after it); "
            "needs --tls-key.",
        ),
        click.option(
            "--tls-key",
            type=click.Path(dir_okay=False, path_type=Path),
            help="The certificate's private key file (PEM, mode 0600); never printed.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def connect_timeout_option(command: Callable[..., None]) -> Callable[..., None]:
    return click.option(
        "--connect-timeout",
        type=FiniteFloat(min=0),
        default=DEFAULT_CONNECT_TIMEOUT_S,
        show_default=True,
        help="Seconds to keep trying while the server is not there yet.",
    )(command)


json_option = click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help='Write a JSON report to this file ("-" for stdout; its schema is in the README).',
)
html_option = click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help='Write a self-contained HTML report with charts to this file ("-" for stdout).',
)
trace_option = click.option(
    "--trace",
    "trace_path",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE.json",
    help="Write the run's timeline to this file in the Trace Event Format "
    "(open it in ui.perfetto.dev or chrome://tracing).",
)
quiet_option = click.option(
    "--quiet", "-q", is_flag=True, help="No live view and no summary on stderr."
)


start_method_option = click.option(
    "--start-method",
    type=StartMethodType(START_METHODS),
    envvar=START_METHOD_ENV_VAR,
    default=platform_start_method(),
    show_default=True,
    help="How agent processes are started (env MPMARKET_START_METHOD).",
)

agents_per_process_option = click.option(
    "--agents-per-process",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    metavar="N",
    help="Run up to N agents of one role per process, a thread each: fewer "
    "processes start and stop faster and use less memory, but a process that "
    "dies takes its N agents with it.",
)


market_option = click.option(
    "--market",
    type=click.Choice(["mpmarket", "classic"]),
    default="mpmarket",
    show_default=True,
    help="The market to run on: mpmarket's, or classic: the course's design (a list "
    "of products, five locks, waits that sleep) on a stock manager server, as a reference.",
)


def log_options(command: Callable[..., None]) -> Callable[..., None]:
    """The operation log's options, shared by run and serve."""
    options = [
        click.option(
            "--log-file",
            type=click.Path(dir_okay=False, path_type=Path),
            help="Log every market operation to this rotating file (UTC timestamps).",
        ),
        click.option(
            "--log-level",
            type=click.Choice(LEVELS, case_sensitive=False),
            default="INFO",
            show_default=True,
            help="INFO logs every operation; WARNING only carts given back and leases expired.",
        ),
        click.option(
            "--log-max-bytes",
            type=click.IntRange(min=1024),
            default=DEFAULT_MAX_BYTES,
            show_default=True,
            help="Rotate the log file at this size.",
        ),
        click.option(
            "--log-backups",
            type=click.IntRange(min=0),
            default=DEFAULT_BACKUPS,
            show_default=True,
            help="Rotated log files to keep.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def workload_options(command: Callable[..., None]) -> Callable[..., None]:
    """The options that choose a workload, shared by run and simulate."""
    options = [
        click.argument(
            "config",
            required=False,
            type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
        ),
        click.option(
            "--producers",
            "-p",
            type=click.IntRange(min=1),
            help="Generate a workload with this many producers (default 4).",
        ),
        click.option(
            "--consumers",
            "-c",
            type=click.IntRange(min=0),
            help="Generate a workload with this many consumers (default 8).",
        ),
        click.option(
            "--sessions",
            type=click.IntRange(min=0),
            default=3,
            show_default=True,
            help="Shopping sessions per generated consumer.",
        ),
        click.option(
            "--seed", type=int, default=0, show_default=True, help="Seed of the generated workload."
        ),
        click.option(
            "--queue-size",
            type=click.IntRange(min=1),
            help="Products one producer may have on sale (overrides the config).",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command
