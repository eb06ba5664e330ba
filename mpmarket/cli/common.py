"""What several commands share: the printing observer, report files, keys, signals."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from mpmarket.cli.exitcodes import ExitCode, fail
from mpmarket.errors import AuthkeyError
from mpmarket.net.authkey import Authkey, load_authkey
from mpmarket.net.oplog import LogSettings
from mpmarket.products import Product
from mpmarket.run.report import AgentDeath, RunObserver, RunReport
from mpmarket.run.timeline import Timeline
from mpmarket.view.html import render_html
from mpmarket.view.live import LiveView
from mpmarket.view.summary import result_lines

__all__ = ["PrintingObserver", "interrupt", "load_key", "log_settings", "write_reports"]


def write_reports(
    document: dict[str, Any], report: RunReport, json_path: Path | None, html_path: Path | None
) -> None:
    """The --json and --html files of a run."""
    if json_path is not None:
        json_path.write_text(json.dumps(document, indent=2) + "\n")
    if html_path is not None and report.timeline is not None:
        html_path.write_text(render_html(document, report.timeline))


def log_settings(
    log_file: Path | None, log_level: str, log_max_bytes: int, log_backups: int
) -> LogSettings | None:
    """The operation log the --log-* options ask for, or None without --log-file."""
    if log_file is None:
        return None
    return LogSettings(str(log_file), log_level.upper(), log_max_bytes, log_backups)


class PrintingObserver(RunObserver):
    """Prints result lines on stdout and the live view on stderr as a run goes."""

    def __init__(
        self,
        console: Console,
        *,
        quiet: bool,
        started_at: float,
        print_orders: bool = True,
        print_deaths: bool = True,
    ) -> None:
        self.console = console
        self.print_orders = print_orders
        self.print_deaths = print_deaths
        self.view = LiveView(console, quiet=quiet)
        self.started_at = started_at

    def on_started(self, producers: int, consumers: int) -> None:
        self.view.start()

    def on_sample(self, timeline: Timeline) -> None:
        self.view.update(timeline, time.perf_counter() - self.started_at)

    def on_order(self, consumer: str, products: list[Product]) -> None:
        if self.print_orders:
            sys.stdout.write(result_lines(consumer, products))
            sys.stdout.flush()

    def on_agent_died(self, death: AgentDeath) -> None:
        if self.print_deaths:
            self.console.print(
                f"[bold red]mpmarket:[/] {death.describe()}", highlight=False, soft_wrap=True
            )

    def close(self) -> None:
        self.view.stop()


def interrupt(signum: int, _frame: object) -> None:
    """SIGTERM stops a run the way Ctrl-C does: orderly, with a summary."""
    raise KeyboardInterrupt(signal.Signals(signum).name)


def load_key(console: Console, key_file: Path | None, *, create: bool = False) -> Authkey:
    """The authkey to use; a bad or missing one is a usage error (exit 2)."""
    try:
        return load_authkey(key_file, create=create)[0]
    except AuthkeyError as error:
        fail(console, str(error), ExitCode.USAGE)
