"""Options that ``mpmarket``'s commands and ``mpmarket bench``'s share, defined once."""

from __future__ import annotations

import click

from mpmarket.runner import START_METHODS, default_start_method

__all__ = ["agents_per_process_option", "start_method_option"]

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
