"""The ``mpmarket`` command: parse, call, print. No logic a test would want.

Exit codes (the same for every command):

\b
  0    success
  1    the run failed: an agent died or reported an error, the market went away
  2    bad usage or a bad workload (one line names the file and the field)
  3    the workload deadlocks (simulate predicts that it can never finish)
  130  interrupted (Ctrl-C or SIGTERM)
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from enum import IntEnum
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from mpmarket import __version__
from mpmarket.errors import MpmarketError, WorkloadError
from mpmarket.products import Product
from mpmarket.report import format_simulation, format_summary, report_to_json, result_lines
from mpmarket.runner import START_METHODS, LocalRun, RunObserver, default_start_method
from mpmarket.simulate import simulate
from mpmarket.workload import Workload, generate, load_workload

__all__ = ["ExitCode", "main"]


class ExitCode(IntEnum):
    OK = 0
    RUN_FAILED = 1
    USAGE = 2
    DEADLOCK = 3
    INTERRUPTED = 130


# The live progress redraws at most this often: often enough to look alive,
# rarely enough to cost nothing next to the orders it counts.
PROGRESS_REFRESH_S = 0.1


class _PrintingObserver(RunObserver):
    """Prints result lines on stdout and progress on stderr as a run goes."""

    def __init__(self, workload: Workload, console: Console, show_progress: bool) -> None:
        self.console = console
        self.total = workload.products_to_buy
        self.progress: Progress | None = None
        self.show_progress = show_progress and console.is_terminal
        self.last_refresh = 0.0
        self.bought = 0
        self.task = 0

    def on_started(self, producers: int, consumers: int) -> None:
        # Created only now, after every agent process has been forked.
        if self.show_progress:
            self.progress = Progress(
                TextColumn("buying"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
                auto_refresh=False,
            )
            self.progress.start()
            self.task = self.progress.add_task("buying", total=self.total)

    def on_order(self, consumer: str, products: list[Product]) -> None:
        sys.stdout.write(result_lines(consumer, products))
        sys.stdout.flush()
        self.bought += len(products)
        if self.progress is not None:
            now = time.monotonic()
            if now - self.last_refresh >= PROGRESS_REFRESH_S:
                self.last_refresh = now
                self.progress.update(self.task, completed=self.bought)
                self.progress.refresh()

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def _interrupt(signum: int, _frame: object) -> None:
    """SIGTERM stops a run the way Ctrl-C does: orderly, with a summary."""
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _fail(console: Console, message: str, code: ExitCode) -> None:
    console.print(f"[bold red]mpmarket: error:[/] {message}", highlight=False, soft_wrap=True)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mpmarket")
def cli() -> None:
    """A producer-consumer marketplace of real processes."""


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


def _workload(
    config: Path | None,
    producers: int | None,
    consumers: int | None,
    sessions: int,
    seed: int,
    queue_size: int | None,
) -> Workload:
    """The workload the options describe; WorkloadError or UsageError if wrong."""
    if config is not None:
        if producers is not None or consumers is not None:
            raise click.UsageError("give either CONFIG or --producers/--consumers, not both")
        workload = load_workload(config)
    else:
        workload = generate(
            producers if producers is not None else 4,
            consumers if consumers is not None else 8,
            sessions=sessions,
            seed=seed,
        )
    if queue_size is not None:
        workload = replace(workload, queue_size_per_producer=queue_size)
    return workload


@cli.command(epilog=__doc__.split("\n", 2)[2])
@workload_options
@click.option(
    "--start-method",
    type=click.Choice(START_METHODS),
    default=default_start_method(),
    show_default=True,
    help="How agent processes are started.",
)
@click.option(
    "--log-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Log every market operation to this rotating file.",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write a JSON report of the run to this file.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress and no summary on stderr.")
def run(
    config: Path | None,
    producers: int | None,
    consumers: int | None,
    sessions: int,
    seed: int,
    queue_size: int | None,
    start_method: str,
    log_file: Path | None,
    json_path: Path | None,
    quiet: bool,
) -> None:
    """Run a workload: a server process and one process per agent.

    CONFIG is a workload file: mpmarket's TOML (*.toml) or the course's JSON
    (anything else). Without CONFIG a workload is generated from --producers
    and --consumers (4 and 8 by default). One line per bought product goes to
    stdout as orders arrive; progress and the summary go to stderr.

    \b
    Examples:
      mpmarket run --producers 4 --consumers 8
      mpmarket run configs/tea-and-coffee.toml --json report.json
      mpmarket run course-case.in | sort > bought.txt
    """
    started_at = time.perf_counter()
    console = Console(stderr=True)
    try:
        workload = _workload(config, producers, consumers, sessions, seed, queue_size)
    except WorkloadError as error:
        _fail(console, str(error), ExitCode.USAGE)

    observer = _PrintingObserver(workload, console, show_progress=not quiet)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        report = LocalRun(
            workload,
            observer=observer,
            start_method=start_method,
            log_file=log_file,
            started_at=started_at,
        ).run()
    finally:
        observer.close()

    if report.interrupted:
        code = ExitCode.INTERRUPTED
    elif report.failures:
        code = ExitCode.RUN_FAILED
    else:
        code = ExitCode.OK
    ideal = simulate(workload)  # milliseconds, after the run: not in its timings
    if not quiet:
        console.print(format_summary(report, ideal.makespan))
    if json_path is not None:
        document = report_to_json(report, code, ideal.makespan)
        json_path.write_text(json.dumps(document, indent=2) + "\n")
    for failure in report.failures:
        console.print(f"[bold red]mpmarket: error:[/] {failure}", highlight=False, soft_wrap=True)
    if report.interrupted:
        console.print("[yellow]mpmarket: interrupted[/]")
    sys.exit(code)


@cli.command(name="simulate", epilog=__doc__.split("\n", 2)[2])
@workload_options
@click.option(
    "--poll", is_flag=True, help="Also simulate the classic design whose waits are sleeps."
)
def simulate_command(
    config: Path | None,
    producers: int | None,
    consumers: int | None,
    sessions: int,
    seed: int,
    queue_size: int | None,
    poll: bool,
) -> None:
    """Predict a workload's best possible makespan, or its deadlock.

    A discrete-event simulation with zero-cost calls and instant wake-ups: the
    time until the last order of an ideal run. With --poll, also the makespan
    of the classic design that sleeps the retry and republish times. A workload
    that can never finish is explained (who waits for what, what fills the
    producers' slots) and exits with code 3.

    \b
    Examples:
      mpmarket simulate configs/busy-market.toml --poll
      mpmarket simulate --producers 16 --consumers 32 --seed 3
    """
    console = Console(stderr=True)
    try:
        workload = _workload(config, producers, consumers, sessions, seed, queue_size)
    except WorkloadError as error:
        _fail(console, str(error), ExitCode.USAGE)
    ideal = simulate(workload)
    for line in format_simulation(ideal, "ideal"):
        click.echo(line)
    if poll:
        for line in format_simulation(simulate(workload, poll=True), "polling"):
            click.echo(line)
    sys.exit(ExitCode.DEADLOCK if ideal.deadlock else ExitCode.OK)


def main() -> None:
    """Entry point of the console script."""
    try:
        cli.main(prog_name="mpmarket", standalone_mode=True)
    except MpmarketError as error:  # pragma: no cover - commands map their own
        _fail(Console(stderr=True), str(error), ExitCode.RUN_FAILED)
