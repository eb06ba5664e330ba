"""RunMarket: a run's market, from the server's start to its shutdown.

A local run starts its own server (mpmarket's, or the classic one on a stock
manager server) with SIGINT and SIGHUP blocked, so that a Ctrl-C or a hang-up
sent to the whole process group leaves it to its runner; a ``--connect`` run
finds the one served elsewhere. Either way the runner attaches its own proxy.
At the end, the shutdown's calls to the market (close, books) are bounded by
``SHUTDOWN_CALLS_LIMIT``: a frozen or lost server is killed, never waited on;
the server of a ``--connect`` run is never shut down.

``LocalRun`` (``local.py``) drives it: which step when, with the fleet.
"""

from __future__ import annotations

import contextlib
import signal
from multiprocessing.context import BaseContext

from mpmarket.errors import MarketUnavailableError, MpmarketError
from mpmarket.net.classic import (
    ClassicManager,
    ClassicProxy,
    connect_classic_runner,
    start_classic_server,
)
from mpmarket.net.client import ATTACH_TIMEOUT, MarketProxy, connect
from mpmarket.net.oplog import LogSettings
from mpmarket.net.server import MarketManager, new_authkey, start_server
from mpmarket.net.wire import Address
from mpmarket.proc.interrupts import Interrupts, TimeLimitExpired, blocked, time_limit
from mpmarket.proc.lifeline import TERMINATE_GRACE, ChildProcess
from mpmarket.proc.limits import spawn_error
from mpmarket.run.report import RunReport

__all__ = ["MARKETS", "SHUTDOWN_CALLS_LIMIT", "RunMarket"]

# The markets a run can use: mpmarket's own, or the course's classic design
# (``mpmarket.core.classic``) on a stock manager server, as a reference.
MARKETS = ("mpmarket", "classic")

# How long the shutdown's calls to the market (close, books) may take: a
# healthy server answers in milliseconds; a frozen one is then killed.
SHUTDOWN_CALLS_LIMIT = 2.0


class RunMarket:
    """The server of a run (or the one it connects to) and the runner's proxy.

    ``report`` is the run's: ``attach()`` sets ``attach_failed``,
    ``close_and_take_books()`` reads ``market_lost`` and sets ``books``.
    With ``connect`` (an address) and ``authkey``, no server is started and
    ``server()`` is None.
    """

    def __init__(
        self,
        report: RunReport,
        *,
        ctx: BaseContext,
        interrupts: Interrupts,
        queue_size_per_producer: int,
        log: LogSettings | None = None,
        market: str = "mpmarket",
        connect: Address | None = None,
        authkey: bytes | None = None,
        connect_timeout: float = ATTACH_TIMEOUT,
    ) -> None:
        self.report = report
        self.ctx = ctx
        self.interrupts = interrupts
        self.queue_size_per_producer = queue_size_per_producer
        self.log = log
        self.market = market
        self.connect = connect
        self._authkey = authkey
        self.connect_timeout = connect_timeout
        self.manager: MarketManager | ClassicManager | None = None
        self.proxy: MarketProxy | ClassicProxy | None = None

    def attach(self) -> tuple[Address, bytes]:
        """Start the server (or find the one to connect to) and attach to it."""
        address: Address
        if self.connect is not None:
            address, authkey = self.connect, self._authkey
            assert authkey is not None
        else:
            authkey = new_authkey()
            start = start_classic_server if self.market == "classic" else start_server
            try:
                with blocked((signal.SIGINT, signal.SIGHUP)):  # the server inherits them blocked
                    self.manager = start(
                        self.queue_size_per_producer,
                        authkey=authkey,
                        ctx=self.ctx,
                        log=self.log,
                    )
            except OSError as error:  # out of files, processes or memory
                raise spawn_error("the market server", error) from error
            address = self.manager.address
        try:
            with self.interrupts.interruptible():  # it may retry for connect_timeout
                if self.market == "classic":  # --market classic: a stock proxy
                    self.proxy = connect_classic_runner(
                        address, authkey, timeout=self.connect_timeout
                    )
                    return address, authkey
                self.proxy = connect(
                    address,
                    authkey,
                    timeout=self.connect_timeout,
                    role="runner",
                    name="mpmarket run",
                )
        except MarketUnavailableError:
            self.report.attach_failed = True
            raise
        return address, authkey

    def server(self) -> ChildProcess | None:
        """The local server's process (None with --connect)."""
        return self.manager._process if self.manager is not None else None

    def close_and_take_books(self, *, close: bool) -> None:
        """The shutdown's calls to the market: ``close`` it if asked, then the books.

        Bounded by ``SHUTDOWN_CALLS_LIMIT``, and a second signal cuts them; a
        lost market's server (dead or frozen) is killed, not called.
        """
        server = self.server()
        if self.report.market_lost and server is not None:
            # Dead or frozen: a shutdown request would wait on it forever.
            with contextlib.suppress(OSError):
                server.kill()
            self.proxy = None
        if self.proxy is not None:
            try:
                # A frozen server would hold these calls for seconds: bounded,
                # and a second signal cuts them.
                with self.interrupts.raising(1), time_limit(SHUTDOWN_CALLS_LIMIT):
                    if close:
                        self.proxy.close()
                    # After the close: a publish between the two would be missing
                    # from the books but in its producer's count.
                    self.report.books = self.proxy.books()
            except MpmarketError:
                pass
            except (KeyboardInterrupt, TimeLimitExpired) as cut:
                # A call cut in two: its connection is out of step, never used again.
                self.proxy.disconnect()
                self.proxy = None
                if isinstance(cut, TimeLimitExpired) and server is not None:
                    with contextlib.suppress(OSError):  # frozen: as a lost market is
                        server.kill()

    def disconnect(self) -> None:
        """Drop the runner's connection, if it still has one."""
        if self.proxy is not None:
            self.proxy.disconnect()

    def shutdown(self) -> None:
        """Shut the local server down (at once if it was killed); none with --connect."""
        if self.manager is not None:
            with contextlib.suppress(OSError, EOFError, MarketUnavailableError):
                self.manager.shutdown()

    def kill_server(self) -> None:
        """No grace for the local server (safe to call twice)."""
        server = self.server()
        if server is not None and server.exitcode is None:
            server.kill()
            server.join(TERMINATE_GRACE)
