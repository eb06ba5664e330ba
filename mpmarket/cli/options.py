"""The click options and parameter types that mpmarket's commands share, defined once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from mpmarket.net.authkey import ENV_VAR
from mpmarket.net.oplog import DEFAULT_BACKUPS, DEFAULT_MAX_BYTES, LEVELS
from mpmarket.net.wire import DEFAULT_PORT, parse_address
from mpmarket.proc.context import START_METHODS, default_start_method

__all__ = [
    "ADDRESS",
    "DEFAULT_ADDRESS",
    "DEFAULT_CONNECT_TIMEOUT_S",
    "SHARD",
    "WORKER_KEY_HELP",
    "agents_per_process_option",
    "authkey_option",
    "connect_timeout_option",
    "html_option",
    "json_option",
    "log_options",
    "market_option",
    "quiet_option",
    "start_method_option",
    "trace_option",
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


ADDRESS = AddressType()
SHARD = ShardType()

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


def connect_timeout_option(command: Callable[..., None]) -> Callable[..., None]:
    return click.option(
        "--connect-timeout",
        type=click.FloatRange(min=0),
        default=DEFAULT_CONNECT_TIMEOUT_S,
        show_default=True,
        help="Seconds to keep trying while the server is not there yet.",
    )(command)


json_option = click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write a JSON report to this file (its schema is in the README).",
)
html_option = click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write a self-contained HTML report with charts to this file.",
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
    type=click.Choice(START_METHODS),
    default=default_start_method(),
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
        click.argument("config", required=False, type=click.Path(dir_okay=False, path_type=Path)),
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
