"""``mpmarket stress``: churn the market, kill agents, check the books; the verdict on stdout."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from mpmarket.cli.common import (
    PrintingObserver,
    check_report_paths,
    stop_signals,
    write_reports,
)
from mpmarket.cli.exitcodes import EPILOG, ExitCode
from mpmarket.cli.options import (
    DURATION,
    agents_per_process_option,
    html_option,
    json_option,
    quiet_option,
    start_method_option,
    trace_option,
)
from mpmarket.cli.output import StdoutLostError, echo
from mpmarket.errors import WorkloadError
from mpmarket.run.stress import plan_stress, run_stress, stress_verdict
from mpmarket.view.console import new_console
from mpmarket.view.summary import format_summary, report_to_json

__all__ = ["stress"]


@click.command(epilog=EPILOG)
@click.option(
    "--producers",
    "-p",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Producers (agents).",
)
@click.option(
    "--consumers",
    "-c",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Consumers (agents).",
)
@click.option(
    "--duration",
    type=DURATION,
    default=10.0,
    show_default=True,
    envvar="MPMARKET_STRESS_SECONDS",
    help="Seconds of churn (env MPMARKET_STRESS_SECONDS).",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of the workload and of the kills."
)
@click.option(
    "--kill-consumers",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Consumers to SIGKILL at random times.",
)
@click.option(
    "--kill-producers",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Producers to SIGKILL at random times (never the last maker of a product).",
)
@start_method_option
@agents_per_process_option
@json_option
@html_option
@trace_option
@quiet_option
def stress(
    producers: int,
    consumers: int,
    duration: float,
    seed: int,
    kill_consumers: int,
    kill_producers: int,
    start_method: str,
    agents_per_process: int,
    json_path: Path | None,
    html_path: Path | None,
    trace_path: Path | None,
    quiet: bool,
) -> None:
    """Churn the market as fast as it goes, kill agents, and check the books.

    Producers with no make time publish as fast as the market lets them and
    consumers run session after session, for --duration seconds, while
    --kill-consumers and --kill-producers agents are killed with SIGKILL at
    random (seeded) times (with --agents-per-process, that many processes,
    each with all its agents). The books are audited from scratch four times
    a second and each consumer's orders are checked against its sessions.
    Exit 0 only when no invariant was ever violated; the verdict is one line
    on stdout (on stderr when --json - or --html - puts the report there).

    \b
    Examples:
      mpmarket stress --duration 10 --kill-consumers 2 --kill-producers 1
      mpmarket stress --producers 16 --consumers 32 --agents-per-process 4 --kill-consumers 2
      MPMARKET_STRESS_SECONDS=600 mpmarket stress --json stress.json --html stress.html
    """
    started_at = time.perf_counter()
    console = new_console(stderr=True)
    report_on_stdout = check_report_paths(json_path, html_path)  # issue 17: "-" is stdout
    try:
        plan = plan_stress(
            producers,
            consumers,
            duration_s=duration,
            seed=seed,
            kill_consumers=kill_consumers,
            kill_producers=kill_producers,
            agents_per_process=agents_per_process,
        )
    except WorkloadError as error:
        raise click.UsageError(str(error).removeprefix("<stress>: ")) from None
    with stop_signals() as interrupts, interrupts.deferred():
        # Planned kills are no news; --quiet keeps them out of stderr.
        observer = PrintingObserver(
            console,
            quiet=quiet,
            started_at=started_at,
            print_orders=False,
            print_deaths=not quiet,
            interrupts=interrupts,
        )
        try:
            result = run_stress(
                plan,
                observer=observer,
                start_method=start_method,
                started_at=started_at,
                trace=trace_path is not None,
            )
        finally:
            observer.close()
        report = result.report
        code = stress_verdict(
            result, ExitCode.of(report), ok=ExitCode.OK, failed=ExitCode.RUN_FAILED
        )
        if not quiet:
            console.print(format_summary(report))
        document = report_to_json(report, code) | {
            "stress": {
                "duration_s": duration,
                "seed": seed,
                "agents_per_process": agents_per_process,
                "kills": [
                    {"at_s": at, "agent": name, "process": list(plan.casualties[name])}
                    for at, name in plan.kills
                ],
                "problems": result.problems,
                "ok": result.ok,
            }
        }
        problems = write_reports(document, report, json_path, html_path, trace_path=trace_path)
        for problem in result.problems:
            console.print(
                f"[bold red]mpmarket: violation:[/] {problem}", highlight=False, soft_wrap=True
            )
        for problem in problems:
            console.print(f"[bold red]mpmarket: error:[/] {problem}", highlight=False)
        if problems and code == ExitCode.OK:
            code = ExitCode.RUN_FAILED
        if interrupts.signalled:  # also one that came after the run, during its reports
            report.interrupted = True
            code = ExitCode.INTERRUPTED
        rate = report.products_bought / report.market_s if report.market_s else 0.0
        verdict = "OK" if result.ok and code == ExitCode.OK else "FAILED"
        line = (
            f"stress {verdict}: {report.products_bought} products bought in "
            f"{report.market_s:.1f} s ({rate:,.0f}/s), {len(report.deaths)} agents killed, "
            f"{len(result.problems)} violations"
        )
        try:
            if report_on_stdout:  # stdout holds the report alone
                console.print(line, highlight=False, soft_wrap=True, markup=False)
            else:
                echo(line)
        except StdoutLostError as lost:  # the verdict is stdout's only line
            if code == ExitCode.OK:
                code = ExitCode(lost.exit_code)
                if not lost.reader_gone:
                    console.print(f"[bold red]mpmarket: error:[/] {lost}", highlight=False)
        if report.interrupted:
            console.print("[yellow]mpmarket: interrupted[/]")
        sys.exit(code)
