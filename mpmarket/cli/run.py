"""``mpmarket run``: a workload's run, here or against a served market."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from mpmarket.cli.common import (
    PrintingObserver,
    check_report_paths,
    finish_line,
    load_key,
    log_settings,
    run_exit_code,
    stop_signals,
    write_reports,
)
from mpmarket.cli.exitcodes import EPILOG, ExitCode, fail
from mpmarket.cli.options import (
    ADDRESS,
    SHARD,
    WORKER_KEY_HELP,
    FiniteFloat,
    agents_per_process_option,
    authkey_option,
    connect_timeout_option,
    html_option,
    json_option,
    log_options,
    market_option,
    quiet_option,
    start_method_option,
    tls_ca_option,
    trace_option,
    use_tls_ca,
    workload_options,
)
from mpmarket.core.simulate import simulate
from mpmarket.errors import WorkloadError
from mpmarket.net.wire import Address
from mpmarket.run.local import LocalRun
from mpmarket.run.plan import pick_agents
from mpmarket.run.settings import RunOptionsError, check_run_options, workload_from_options
from mpmarket.view.console import new_console
from mpmarket.view.summary import format_agents, format_summary, report_to_json

__all__ = ["run"]


@click.command(epilog=EPILOG)
@workload_options
@market_option
@start_method_option
@agents_per_process_option
@log_options
@json_option
@html_option
@trace_option
@quiet_option
@click.option(
    "--connect",
    type=ADDRESS,
    help="Run the agents against the market served at HOST:PORT (mpmarket serve).",
)
@authkey_option(WORKER_KEY_HELP)
@connect_timeout_option
@tls_ca_option
@click.option(
    "--only",
    type=click.Choice(["producers", "consumers"]),
    help="With --connect: run only the workload's producers, or only its consumers.",
)
@click.option(
    "--agents",
    "agent_names",
    metavar="NAME,NAME,...",
    help="With --connect: run only the agents of these names.",
)
@click.option(
    "--shard",
    type=SHARD,
    help="With --connect: run the K-th of N equal parts of the (chosen) agents.",
)
@click.option(
    "--close-market",
    is_flag=True,
    help="With --connect: close the market once this run's consumers are done "
    "(ends the producers attached from anywhere).",
)
@click.option(
    "--fail-fast",
    is_flag=True,
    help="Stop the run when an agent dies (by default the others go on; a dead "
    "consumer's cart goes back on sale).",
)
@click.option(
    "--stall-timeout",
    type=FiniteFloat(min=0, min_open=True),
    metavar="SECONDS",
    help="Stop and explain when no consumer made progress for this long "
    "(default: from the workload's times, at least 10 s).",
)
def run(
    config: Path | None,
    producers: int | None,
    consumers: int | None,
    sessions: int,
    seed: int,
    queue_size: int | None,
    market: str,
    start_method: str,
    agents_per_process: int,
    log_file: Path | None,
    log_level: str,
    log_max_bytes: int,
    log_backups: int,
    json_path: Path | None,
    html_path: Path | None,
    trace_path: Path | None,
    quiet: bool,
    connect: Address | None,
    authkey_file: Path | None,
    connect_timeout: float,
    tls_ca: Path | None,
    only: str | None,
    agent_names: str | None,
    shard: tuple[int, int] | None,
    close_market: bool,
    fail_fast: bool,
    stall_timeout: float | None,
) -> None:
    """Run a workload: a server process and one process per agent (or per N).

    CONFIG is a workload file: mpmarket's TOML (*.toml) or the course's JSON
    (anything else); "-" reads it from stdin (JSON if it starts with "{", else
    TOML). Without CONFIG a workload is generated from --producers and
    --consumers (4 and 8 by default). One line per bought product goes to
    stdout as orders arrive; progress and the summary go to stderr. With
    --json - (or --html -) the report is stdout's only content, in place of
    those lines (its "orders" hold them).

    --market classic runs the workload on the course's own design instead, a
    reference to compare with: the same agents and result lines.

    With --connect, no server is started: the agents attach to a market that
    `mpmarket serve` runs (on this machine or another), and --only, --agents
    and --shard pick the part of the workload this machine runs. When its
    consumers are done the run stops its own producers and leaves the market
    open (--close-market closes it, which ends every producer attached); a
    run of producers only ends when the market is closed.

    \b
    Examples:
      mpmarket run --producers 4 --consumers 8
      mpmarket run configs/tea-and-coffee.toml --json report.json
      mpmarket run course-case.in | sort > bought.txt
      mpmarket gen - --format course | mpmarket run - --json - -q | jq .products_bought
      mpmarket run course-case.in --market classic
      mpmarket run market.toml --connect 10.0.0.5:7151 --authkey-file key --only producers
      mpmarket run market.toml --connect 10.0.0.5:7151 --authkey-file key --only consumers --close-market
    """
    started_at = time.perf_counter()
    console = new_console(stderr=True)
    names = (
        tuple(name.strip() for name in agent_names.split(",") if name.strip())
        if agent_names
        else ()
    )
    try:
        check_run_options(
            connect=connect,
            only=only,
            agents=agent_names,
            shard=shard,
            close_market=close_market,
            authkey_file=authkey_file,
            log_file=log_file,
            queue_size=queue_size,
            market=market,
        )
        report_on_stdout = check_report_paths(json_path, html_path)  # issue 17: "-" is stdout
        workload = workload_from_options(config, producers, consumers, sessions, seed, queue_size)
    except RunOptionsError as error:
        raise click.UsageError(str(error)) from None
    except WorkloadError as error:
        fail(console, str(error), ExitCode.USAGE)
    authkey = None
    if connect is not None:
        try:
            workload = pick_agents(workload, only=only, names=names, shard=shard)
        except ValueError as error:
            raise click.UsageError(str(error)) from None
        authkey = load_key(console, authkey_file).secret
        use_tls_ca(console, connect, tls_ca)  # the agents it starts inherit it
    elif tls_ca is not None and _given(click.get_current_context(), "tls_ca"):
        raise click.UsageError("--tls-ca needs --connect (a local run's server is plaintext)")

    with stop_signals() as interrupts, interrupts.deferred():
        observer = PrintingObserver(
            console,
            quiet=quiet,
            started_at=started_at,
            print_orders=not report_on_stdout,
            interrupts=interrupts,
        )
        try:
            report = LocalRun(
                workload,
                observer=observer,
                start_method=start_method,
                log=log_settings(log_file, log_level, log_max_bytes, log_backups),
                started_at=started_at,
                connect=connect,
                authkey=authkey,
                connect_timeout=connect_timeout,
                close_market=close_market,
                fail_fast=fail_fast,
                stall_timeout=stall_timeout,
                agents_per_process=agents_per_process,
                market=market,
                interrupts=interrupts,
                trace=trace_path is not None,
            ).run()
        finally:
            observer.close()

        lost = observer.stdout_lost
        if lost is not None and not lost.reader_gone:
            report.failures.append(f"{lost}; the run was stopped")
            lost.reported = True
        code = run_exit_code(report, lost)
        # The ideal makespan, in milliseconds after the run (not in its timings);
        # meaningless for a part of a workload run against a shared market.
        ideal = simulate(workload).makespan if connect is None else None
        if not quiet and not report.attach_failed:
            for table in format_agents(report):
                console.print(table)
            console.print(format_summary(report, ideal))
        problems = write_reports(
            report_to_json(report, code, ideal), report, json_path, html_path, trace_path=trace_path
        )
        # emoji=False: no ':name:' in a message is an emoji, and no module is
        # loaded to print it (a run out of open files could not load one).
        for failure in [*report.failures, *report.violations, *problems]:
            console.print(
                f"[bold red]mpmarket: error:[/] {failure}",
                highlight=False,
                soft_wrap=True,
                emoji=False,
            )
        for line in report.stall:
            console.print(f"[bold red]mpmarket:[/] {line}", highlight=False, soft_wrap=True)
        if problems and code == ExitCode.OK:
            code = ExitCode.RUN_FAILED
        if interrupts.signalled:  # also one that came after the run, during its reports
            report.interrupted = True
            code = ExitCode.INTERRUPTED
        last = finish_line(report, lost)
        if last is not None:
            console.print(last, highlight=False, soft_wrap=True)
        sys.exit(code)


def _given(ctx: click.Context, name: str) -> bool:
    """Given on the command line (not from the environment nor a default)."""
    return ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE
