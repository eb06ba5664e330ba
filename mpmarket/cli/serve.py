"""``mpmarket serve``: a market for workers of this and other machines, until Ctrl-C."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import click
from rich.console import Console
from rich.live import Live

from mpmarket.cli.common import log_settings, stop_signals
from mpmarket.cli.exitcodes import EPILOG, ExitCode, fail
from mpmarket.cli.options import (
    ADDRESS,
    DEFAULT_ADDRESS,
    FiniteFloat,
    authkey_option,
    log_options,
    quiet_option,
    tls_server_options,
)
from mpmarket.core.market import Marketplace
from mpmarket.core.workload import DEFAULT_QUEUE_SIZE
from mpmarket.errors import AuthkeyError
from mpmarket.net.authkey import ENV_VAR, Authkey, load_authkey, require_explicit_key
from mpmarket.net.server import CART_LEASE_S, SERVE_DRAIN_GRACE, ServedMarket
from mpmarket.net.tls import ServerTLS, TLSFileError, load_server_tls
from mpmarket.net.wire import (
    DEFAULT_MAX_REQUEST_SIZE,
    MIN_MAX_REQUEST_SIZE,
    Address,
    format_address,
    is_loopback,
)
from mpmarket.proc.interrupts import Interrupts
from mpmarket.view.console import new_console
from mpmarket.view.status import format_serve_line, format_serve_summary, format_serve_view

__all__ = ["serve"]


# serve's live view samples the market this often on a terminal (one
# books() under the market lock each time: nothing next to the traffic)...
SERVE_VIEW_INTERVAL_S = 0.25
# ...and writes a plain line at most this often when stderr is not one (a
# log file or a CI job), and only when something changed.
SERVE_LOG_INTERVAL_S = 10.0


@click.command(epilog=EPILOG)
@click.option(
    "--listen",
    type=ADDRESS,
    default=DEFAULT_ADDRESS,
    show_default=True,
    help="Address to listen on; anything but loopback needs an explicit key.",
)
@click.option(
    "--queue-size",
    type=click.IntRange(min=1),
    default=DEFAULT_QUEUE_SIZE,
    show_default=True,
    help="Products one producer may have on sale.",
)
@authkey_option(
    f"File holding the authkey, created with a random key (mode 0600) if missing. "
    f"Without it: ${ENV_VAR}, else the default file $XDG_RUNTIME_DIR/mpmarket/authkey "
    "(or ~/.config/mpmarket/authkey)."
)
@log_options
@click.option(
    "--cart-lease",
    type=FiniteFloat(min=0, min_open=True),
    default=CART_LEASE_S,
    show_default=True,
    metavar="SECONDS",
    help="Give back the cart of a consumer that holds products and made no call this long "
    "(a vanished or frozen worker).",
)
@click.option(
    "--max-request-size",
    type=click.IntRange(min=MIN_MAX_REQUEST_SIZE),
    default=DEFAULT_MAX_REQUEST_SIZE,
    show_default=True,
    metavar="BYTES",
    help="Refuse a longer request: its client gets an error and is disconnected, "
    "the others are served on.",
)
@tls_server_options
@quiet_option
def serve(
    listen: Address,
    queue_size: int,
    authkey_file: Path | None,
    log_file: Path | None,
    log_level: str,
    log_max_bytes: int,
    log_backups: int,
    cart_lease: float,
    max_request_size: int,
    tls_cert: Path | None,
    tls_key: Path | None,
    quiet: bool,
) -> None:
    """Serve a market for workers of this and other machines, until Ctrl-C.

    Workers attach with `mpmarket run CONFIG --connect HOST:PORT` and the same
    authkey; `mpmarket status` shows the market. The key comes from
    --authkey-file or $MPMARKET_AUTHKEY; without either, a random key is
    written to the default file (mode 0600) and its path printed, never the
    key. Listening on anything but loopback needs an explicit key: whoever
    holds it can run code in this process (BaseManager speaks pickle).

    With --tls-cert and --tls-key it serves TLS only: workers give --tls-ca
    (the CA that signed the certificate) and check the certificate and the
    host name they connect to; the authkey handshake runs inside TLS.

    On Ctrl-C, SIGTERM or SIGHUP the market is closed (attached producers end
    cleanly), a summary is printed, and serve exits 0.

    \b
    Examples:
      mpmarket serve
      mpmarket serve --listen 0.0.0.0:7151 --authkey-file ~/.mpmarket-key --queue-size 8
      mpmarket serve --listen 0.0.0.0:7151 --authkey-file key --tls-cert cert.pem --tls-key key.pem
    """
    console = new_console(stderr=True)
    host = listen[0]
    try:
        require_explicit_key(
            format_address(listen), authkey_file, loopback=lambda: is_loopback(host)
        )
        key, created = load_authkey(authkey_file, create=True)
    except AuthkeyError as error:
        fail(console, str(error), ExitCode.USAGE)
    tls = _server_tls(console, tls_cert, tls_key)
    log = log_settings(log_file, log_level, log_max_bytes, log_backups)
    logger = log.open() if log is not None else None
    market = Marketplace(queue_size, logger=logger)
    try:
        served = ServedMarket(
            market,
            listen,
            key.secret,
            cart_lease_s=cart_lease,
            max_request_size=max_request_size,
            tls=tls,
        )
    except OSError as error:
        reason = (error.strerror or str(error)).lower()
        fail(console, f"cannot listen on {format_address(listen)}: {reason}", ExitCode.RUN_FAILED)
    address = format_address(served.address)
    with stop_signals() as interrupts, interrupts.deferred():
        started = time.monotonic()
        served.start()
        console.print(
            _serve_start_line(served.address, key, created, tls), highlight=False, soft_wrap=True
        )
        if not quiet:
            _watch(console, served, address, started, interrupts)
        else:
            while not interrupts.wait(3600):
                pass
        # Close the market, then give the clients a moment to leave (a second
        # signal: no more).
        served.stop(grace=0)
        deadline = time.monotonic() + SERVE_DRAIN_GRACE
        while served.connections() and time.monotonic() < deadline and not interrupts.hurry:
            interrupts.wait(0.02)
        if not quiet:
            books = market.books()
            console.print(
                format_serve_summary(address, books, time.monotonic() - started, served.refused)
            )
        sys.exit(ExitCode.OK)


def _server_tls(console: Console, cert: Path | None, key: Path | None) -> ServerTLS | None:
    """The TLS context of --tls-cert and --tls-key, or None; a bad file is exit 2."""
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        fail(console, "--tls-cert and --tls-key go together", ExitCode.USAGE)
    try:
        return load_server_tls(cert, key)
    except TLSFileError as error:
        fail(console, str(error), ExitCode.USAGE)


def _serve_start_line(
    address: Address, key: Authkey, created: bool, tls: ServerTLS | None = None
) -> str:
    """Where serve listens and how workers attach: the key's place, never the key."""
    host, port = address
    shown = format_address(address)
    if host in ("", "0.0.0.0", "::"):
        shown = format_address((socket.gethostname(), port))
    where = (
        f"authkey in {key.path}{' (new)' if created else ''}"
        if key.path
        else f"authkey from ${ENV_VAR}"
    )
    attach = f"mpmarket run CONFIG --connect {shown}"
    if key.origin == "file":
        attach += f" --authkey-file {key.path}"
    if tls is not None:
        attach += " --tls-ca CA-FILE"
        where += f", TLS only (certificate {tls.cert})"
    return f"mpmarket: serving on {format_address(address)}, {where}; attach with: {attach}"


def _watch(
    console: Console, served: ServedMarket, address: str, started: float, interrupts: Interrupts
) -> None:
    """serve's live view until a stop signal: redrawn on a terminal, else plain lines."""
    if console.is_terminal:
        view = format_serve_view(address, served.market.books(), served.agents(), 0.0)
        with Live(view, console=console, auto_refresh=False, transient=True) as live:
            while not interrupts.wait(SERVE_VIEW_INTERVAL_S):
                up = time.monotonic() - started
                live.update(
                    format_serve_view(address, served.market.books(), served.agents(), up),
                    refresh=True,
                )
        return
    last = None
    while not interrupts.wait(SERVE_LOG_INTERVAL_S):
        books, agents = served.market.books(), served.agents()
        state = (books, tuple((a.name, a.role, a.host) for a in agents))
        if state != last:
            last = state
            line = format_serve_line(books, agents, time.monotonic() - started)
            console.print(f"mpmarket: {line}", highlight=False, soft_wrap=True)
