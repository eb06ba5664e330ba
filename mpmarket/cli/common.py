"""What several commands share: the printing observer, report files, keys, signals."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from mpmarket.cli.exitcodes import ExitCode, fail
from mpmarket.cli.output import StdoutLostError, echo, is_stdout, write_file
from mpmarket.errors import AuthkeyError
from mpmarket.net.authkey import Authkey, load_authkey
from mpmarket.net.oplog import LogSettings
from mpmarket.proc.interrupts import Interrupts
from mpmarket.products import Product
from mpmarket.run.report import AgentDeath, RunObserver, RunReport
from mpmarket.run.timeline import Timeline
from mpmarket.view.html import render_html
from mpmarket.view.live import LiveView
from mpmarket.view.summary import result_lines

__all__ = [
    "PrintingObserver",
    "check_report_paths",
    "finish_line",
    "load_key",
    "log_settings",
    "run_exit_code",
    "stop_signals",
    "write_reports",
]


def check_report_paths(json_path: Path | None, html_path: Path | None) -> bool:
    """Whether a report goes to stdout (``--json -`` or ``--html -``); both: a usage error.

    stdout holds one document, whole, that a pipe (``| jq``) can read: the
    command then writes nothing else there.
    """
    if is_stdout(json_path) and is_stdout(html_path):
        raise click.UsageError("--json - and --html - both ask for stdout: give a file to one")
    return is_stdout(json_path) or is_stdout(html_path)


def write_reports(
    document: dict[str, Any],
    report: RunReport,
    json_path: Path | None,
    html_path: Path | None,
    interrupts: Interrupts | None = None,
    trace_path: Path | None = None,
) -> list[str]:
    """The --json, --html and --trace files of a run; a line for each that could not be written.

    Each file is written whole or not at all (``output.write_file``). A
    signal that comes while one is written (a pipe nobody reads blocks it)
    drops that one: the signal never waits for a report. ``-`` is stdout:
    when its reader went away, ``main()`` exits 141 quietly; another failure
    is a line here.
    """
    interrupts = interrupts or Interrupts.installed() or Interrupts()
    problems = []
    files: list[tuple[Path | None, Callable[[], str]]] = [
        (json_path, lambda: json.dumps(document, indent=2) + "\n")
    ]
    if report.timeline is not None:
        timeline = report.timeline
        files.append((html_path, lambda: render_html(document, timeline, report.trace)))
    if report.trace is not None:
        trace = report.trace
        files.append((trace_path, lambda: json.dumps(trace, separators=(",", ":")) + "\n"))
    for path, text in files:
        if path is None:
            continue
        where = "stdout" if is_stdout(path) else path
        try:
            with interrupts.raising(interrupts.causes):
                write_file(path, text())
        except StdoutLostError as lost:
            if not lost.reader_gone:
                lost.reported = True
                problems.append(
                    str(lost).replace("cannot write to stdout", "cannot write the report to stdout")
                )
        except OSError as error:
            problems.append(f"cannot write {where}: {error.strerror or error}")
        except KeyboardInterrupt:
            problems.append(f"cannot write {where}: interrupted")
    return problems


def log_settings(
    log_file: Path | None, log_level: str, log_max_bytes: int, log_backups: int
) -> LogSettings | None:
    """The operation log the --log-* options ask for, or None without --log-file."""
    if log_file is None:
        return None
    return LogSettings(str(log_file), log_level.upper(), log_max_bytes, log_backups)


class PrintingObserver(RunObserver):
    """Prints result lines on stdout and the live view on stderr as a run goes.

    When stdout takes no more (``output.StdoutLostError``: its reader went away,
    it is closed or full), the run is asked to stop (``interrupts.request``)
    and ``stdout_lost`` says why; later lines are dropped. A failing stderr
    drops its own lines (``output``'s guard) and changes nothing.
    """

    def __init__(
        self,
        console: Console,
        *,
        quiet: bool,
        started_at: float,
        print_orders: bool = True,
        print_deaths: bool = True,
        interrupts: Interrupts | None = None,
    ) -> None:
        self.console = console
        self.print_orders = print_orders
        self.print_deaths = print_deaths
        self.view = LiveView(console, quiet=quiet)
        self.started_at = started_at
        self.interrupts = interrupts or Interrupts.installed() or Interrupts()
        self.stdout_lost: StdoutLostError | None = None

    def on_started(self, producers: int, consumers: int) -> None:
        self.view.start()

    def on_sample(self, timeline: Timeline) -> None:
        self.view.update(timeline, time.perf_counter() - self.started_at)

    def on_order(self, consumer: str, products: list[Product]) -> None:
        if self.print_orders and self.stdout_lost is None:
            try:
                echo(result_lines(consumer, products), nl=False)
            except StdoutLostError as lost:
                self.stdout_lost = lost
                self.interrupts.request("stdout")

    def on_agent_died(self, death: AgentDeath) -> None:
        if self.print_deaths:
            self.console.print(
                f"[bold red]mpmarket:[/] {death.describe()}", highlight=False, soft_wrap=True
            )

    def close(self) -> None:
        self.view.stop()


def stop_signals() -> contextlib.AbstractContextManager[Interrupts]:
    """The Interrupts ``main()`` installed; else one installed for the command's duration.

    (A command runs without ``main()`` under click's test runner.)
    """
    installed = Interrupts.installed()
    if installed is not None:
        return contextlib.nullcontext(installed)
    return Interrupts().install()


def run_exit_code(report: RunReport, stdout_lost: StdoutLostError | None) -> int:
    """A run's exit code: ``ExitCode.of(report)``, or stdout's if that stopped the run."""
    code = ExitCode.of(report)
    if stdout_lost is None or code == ExitCode.INTERRUPTED:
        return code
    if code == ExitCode.OK or report.stopped_by == "stdout":
        return stdout_lost.exit_code
    return code


def finish_line(report: RunReport, stdout_lost: StdoutLostError | None) -> str | None:
    """The last line on stderr of a run that was stopped: signal, or stdout lost."""
    if report.interrupted:
        return "[yellow]mpmarket: interrupted[/]"
    if stdout_lost is not None and stdout_lost.reader_gone:
        return "[yellow]mpmarket: stopped: stdout's reader went away[/]"
    if stdout_lost is not None and not stdout_lost.reported:
        stdout_lost.reported = True
        return f"[bold red]mpmarket: error:[/] {stdout_lost}; the run was stopped"
    return None


def load_key(console: Console, key_file: Path | None, *, create: bool = False) -> Authkey:
    """The authkey to use; a bad or missing one is a usage error (exit 2)."""
    try:
        return load_authkey(key_file, create=create)[0]
    except AuthkeyError as error:
        fail(console, str(error), ExitCode.USAGE)
