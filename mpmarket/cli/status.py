"""``mpmarket status``: one snapshot of a served market."""

from __future__ import annotations

import json
from pathlib import Path

import click

from mpmarket.cli.common import load_key
from mpmarket.cli.exitcodes import EPILOG, ExitCode, fail
from mpmarket.cli.options import (
    ADDRESS,
    DEFAULT_ADDRESS,
    WORKER_KEY_HELP,
    authkey_option,
    connect_timeout_option,
    tls_ca_option,
    use_tls_ca,
)
from mpmarket.cli.output import echo
from mpmarket.errors import MarketUnavailableError
from mpmarket.net.client import connect as attach
from mpmarket.net.wire import Address, format_address
from mpmarket.view.console import new_console
from mpmarket.view.status import format_status, status_to_json

__all__ = ["status"]


@click.command(epilog=EPILOG)
@click.option(
    "--connect",
    type=ADDRESS,
    default=DEFAULT_ADDRESS,
    show_default=True,
    help="Address of the market (mpmarket serve).",
)
@authkey_option(WORKER_KEY_HELP)
@connect_timeout_option
@tls_ca_option
@click.option("--json", "as_json", is_flag=True, help="Print the snapshot as JSON.")
def status(
    connect: Address,
    authkey_file: Path | None,
    connect_timeout: float,
    tls_ca: Path | None,
    as_json: bool,
) -> None:
    """Show one snapshot of a served market, on stdout.

    Products on sale per producer and product, carts and what they hold,
    the agents attached, orders and products bought so far.

    \b
    Examples:
      mpmarket status
      mpmarket status --connect 10.0.0.5:7151 --authkey-file key --json
    """
    console = new_console(stderr=True)
    key = load_key(console, authkey_file)
    use_tls_ca(console, connect, tls_ca)
    try:
        market = attach(
            connect, key.secret, timeout=connect_timeout, role="status", name="mpmarket status"
        )
        snapshot, agents, problems = market.snapshot(), market.agents(), market.audit()
        market.disconnect()
    except MarketUnavailableError as error:
        fail(console, str(error), ExitCode.UNREACHABLE)
    address = format_address(connect)
    if as_json:
        echo(json.dumps(status_to_json(address, snapshot, agents, problems), indent=2))
    else:
        new_console().print(format_status(address, snapshot, agents))
