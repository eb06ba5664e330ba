"""The ``mpmarket bench`` commands: parse, call ``mpmarket.bench``, print.

Each command prints one table on stderr (medians over ``--repeat`` rounds;
min and max are in the ``--json`` file) and exits with the codes of the
``mpmarket`` command: 0 success, 1 a run failed or a check did not hold,
2 bad usage, 4 the market could not be reached or went away, 130 interrupted.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from mpmarket.bench.churn import CHURN_ADD_WAIT, run_churn
from mpmarket.bench.course import run_course
from mpmarket.bench.floor import run_floor
from mpmarket.bench.latency import run_latency
from mpmarket.bench.results import BenchResult, Case, parse_sizes
from mpmarket.bench.scale import run_scale
from mpmarket.cli.exitcodes import ExitCode, fail
from mpmarket.cli.options import agents_per_process_option
from mpmarket.cli.output import write_file
from mpmarket.errors import MarketUnavailableError, MpmarketError, WorkloadError
from mpmarket.proc.interrupts import Interrupts

__all__ = ["bench", "format_result"]


# How each figure is shown: column label and format of the median.
FIGURES: dict[str, tuple[str, str]] = {
    "calls_per_s": ("calls/s", "{:,.0f}"),
    "rt_us": ("round trip µs", "{:.1f}"),
    "bought": ("bought", "{:,.0f}"),
    "calls": ("calls", "{:,.0f}"),
    "published": ("published", "{:,.0f}"),
    "bought_per_s": ("bought/s", "{:,.0f}"),
    "rt_per_product": ("calls/product", "{:.2f}"),
    "bought_vs_floor": ("bought/s ÷ floor calls/s", "{:.2f}"),
    "samples": ("samples", "{:,.0f}"),
    "late": ("late", "{:,.0f}"),
    "p50_us": ("p50 µs", "{:.0f}"),
    "p90_us": ("p90 µs", "{:.0f}"),
    "p99_us": ("p99 µs", "{:.0f}"),
    "p50_vs_rt": ("p50 ÷ rt", "{:.2f}"),
    "p99_vs_rt": ("p99 ÷ rt", "{:.2f}"),
    "agents": ("agents", "{:,.0f}"),
    "startup_s": ("start-up s", "{:.3f}"),
    "wall_s": ("wall s", "{:.3f}"),
    "market_s": ("market s", "{:.3f}"),
    "ideal_s": ("ideal s", "{:.3f}"),
    "market_vs_ideal": ("market ÷ ideal", "{:.2f}"),
    "wall_vs_ideal": ("wall ÷ ideal", "{:.2f}"),
    "server_rss_mb": ("server RSS MB", "{:.1f}"),
    "agent_rss_mb": ("RSS per agent MB", "{:.2f}"),
    "agent_pss_mb": ("PSS per agent MB", "{:.2f}"),
    "process_pss_max_mb": ("max PSS of an agent process MB", "{:.2f}"),
    "processes": ("agent processes", "{:,.0f}"),
    "processes_sampled": ("processes sampled", "{:,.0f}"),
    "seconds": ("seconds", "{:.1f}"),
    "server_rss_start_mb": ("server RSS at start MB", "{:.1f}"),
    "server_rss_end_mb": ("server RSS at end MB", "{:.1f}"),
    "server_rss_growth_mb": ("server RSS growth MB", "{:+.2f}"),
}

# Up to this many rows (cases and floor), a table reads better turned: a row
# per figure and a column per case, as benchmarks have many figures.
MAX_CASE_COLUMNS = 4


def _cell(case: Case, figure: str) -> str:
    if figure not in case.figures:
        return ""
    value = case.median(figure)
    if value is None:
        return "n/a"
    return FIGURES.get(figure, (figure, "{:.3g}"))[1].format(value)


def _label(figure: str) -> str:
    return FIGURES.get(figure, (figure, ""))[0]


def format_result(result: BenchResult) -> Table:
    """One table of the medians: a row per case (the floor first), a column per figure.

    With few cases it is turned: a row per figure, a column per case.
    """
    cases = ([result.floor] if result.floor else []) + result.cases
    names = [c.name if c is not result.floor else f"floor, {c.name}" for c in cases]
    figures = list(dict.fromkeys(name for case in cases for name in case.figures))
    plural = "s" if result.repeat != 1 else ""
    table = Table(
        title=f"mpmarket bench {result.benchmark}",
        caption=f"medians of {result.repeat} round{plural}; min and max in --json",
        title_justify="left",
        caption_justify="left",
    )
    if len(cases) <= MAX_CASE_COLUMNS:
        table.add_column("figure", style="bold")
        for name in names:
            table.add_column(name, justify="right")
        for figure in figures:
            table.add_row(_label(figure), *(_cell(case, figure) for case in cases))
    else:
        table.add_column("case", style="bold")
        for figure in figures:
            table.add_column(_label(figure), justify="right")
        for name, case in zip(names, cases, strict=True):
            table.add_row(name, *(_cell(case, figure) for figure in figures))
    return table


def _execute(json_path: Path | None, call: Callable[[Callable[[str], None]], Any]) -> None:
    """Run one benchmark, print its table, write its JSON, exit with its code."""
    console = Console(stderr=True)

    def progress(message: str) -> None:
        console.print(f"[dim]{message}[/]", highlight=False)

    interrupts = Interrupts.installed()
    try:
        result = call(progress)
    except KeyboardInterrupt:
        fail(console, "interrupted", ExitCode.INTERRUPTED)
    except WorkloadError as error:
        fail(console, str(error), ExitCode.USAGE)
    except MarketUnavailableError as error:
        fail(console, str(error), ExitCode.UNREACHABLE)
    except MpmarketError as error:
        fail(console, str(error), ExitCode.RUN_FAILED)
    if interrupts is not None and interrupts.signalled:  # a run of it stopped in order
        fail(console, "interrupted", ExitCode.INTERRUPTED)
    console.print(format_result(result))
    if json_path is not None:
        try:
            write_file(json_path, json.dumps(result.to_json(), indent=2) + "\n")
        except OSError as error:
            fail(
                console, f"cannot write {json_path}: {error.strerror or error}", ExitCode.RUN_FAILED
            )
    failures = result.failed_checks
    for failure in failures:
        console.print(f"[bold red]mpmarket: check failed:[/] {failure}", highlight=False)
    if failures:
        sys.exit(ExitCode.RUN_FAILED)


class _IntList(click.ParamType):
    """A comma-separated list of positive integers: ``1,8``."""

    name = "N,N..."

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> list[int]:
        if isinstance(value, list | tuple):
            return list(value)
        try:
            numbers = [int(part) for part in str(value).split(",")]
        except ValueError:
            self.fail(f"expected comma-separated counts such as 1,8, got {value!r}", param, ctx)
        if any(n < 1 for n in numbers):
            self.fail(f"every count must be at least 1, got {value!r}", param, ctx)
        return numbers


class _Sizes(click.ParamType):
    """A comma-separated list of PRODUCERSxCONSUMERS: ``1x1,4x8``."""

    name = "PxC,PxC..."

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> list[tuple[int, int]]:
        if isinstance(value, list | tuple):
            return list(value)
        try:
            return parse_sizes(str(value))
        except ValueError as error:
            self.fail(str(error), param, ctx)


def _repeat_option(function: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--repeat",
        type=click.IntRange(min=1),
        default=3,
        show_default=True,
        help="Rounds to measure; every figure is the median of them.",
    )(function)


def _json_option(function: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--json",
        "json_path",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Write the figures (median, min, max) to this JSON file.",
    )(function)


def _floor_calls_option(function: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--floor-calls",
        type=click.IntRange(min=1),
        default=5000,
        show_default=True,
        help="No-op calls per client of the floor measured with it.",
    )(function)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def bench() -> None:
    """Measure this machine and the market: floor, churn, latency, scale, course.

    Each command prints a table of medians on stderr and can write --json.
    Ratios are against a floor (a no-op manager call) measured in the same
    invocation. Exit codes: 0 success, 1 a run failed or a check did not
    hold, 2 bad usage, 4 the market could not be reached or went away,
    130 interrupted.
    """


@bench.command()
@click.option(
    "--clients",
    type=_IntList(),
    metavar="N,...",
    default="1,8",
    show_default=True,
    help="Client process counts to measure.",
)
@click.option(
    "--calls",
    type=click.IntRange(min=1),
    default=5000,
    show_default=True,
    help="No-op calls per client process.",
)
@_repeat_option
@_json_option
def floor(clients: list[int], calls: int, repeat: int, json_path: Path | None) -> None:
    """The cost of a no-op manager call: calls/s and mean round trip."""
    _execute(
        json_path,
        lambda progress: run_floor(clients, calls=calls, repeat=repeat, progress=progress),
    )


@bench.command()
@click.option(
    "--producers", "-P", type=click.IntRange(min=1), help="Measure only this many producers."
)
@click.option(
    "--consumers", "-C", type=click.IntRange(min=1), help="Measure only this many consumers."
)
@click.option(
    "--sizes",
    type=_Sizes(),
    metavar="PxC,...",
    default="1x1,4x8,16x32",
    show_default=True,
    help="PRODUCERSxCONSUMERS to measure (unless -P and -C are given).",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    help="Seconds of churn per size and round.",
)
@click.option(
    "--add-wait-ms",
    type=click.FloatRange(min=0, min_open=True),
    default=CHURN_ADD_WAIT * 1000,
    show_default=True,
    help="How long a consumer's add waits before it tries another kind.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the consumers.")
@_floor_calls_option
@_repeat_option
@_json_option
def churn(
    producers: int | None,
    consumers: int | None,
    sizes: list[tuple[int, int]],
    duration: float,
    add_wait_ms: float,
    seed: int,
    floor_calls: int,
    repeat: int,
    json_path: Path | None,
) -> None:
    """Products bought per second under full load, against the floor.

    Producers publish eight kinds round robin without make time; consumers
    run endless sessions of three adds, maybe a remove, and an order.
    """
    if (producers is None) != (consumers is None):
        raise click.UsageError("give both -P and -C, or neither (then --sizes applies)")
    if producers is not None and consumers is not None:
        sizes = [(producers, consumers)]
    _execute(
        json_path,
        lambda progress: run_churn(
            sizes,
            duration=duration,
            repeat=repeat,
            floor_calls=floor_calls,
            seed=seed,
            add_wait=add_wait_ms / 1000,
            progress=progress,
        ),
    )


@bench.command()
@click.option(
    "--consumers",
    type=_IntList(),
    metavar="N,...",
    default="1,16",
    show_default=True,
    help="Waiting consumer counts to measure.",
)
@click.option(
    "--samples",
    type=click.IntRange(min=1),
    default=2000,
    show_default=True,
    help="Products measured per case and round.",
)
@click.option(
    "--period-ms",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="Milliseconds between two publishes.",
)
@_floor_calls_option
@_repeat_option
@_json_option
def latency(
    consumers: list[int],
    samples: int,
    period_ms: float,
    floor_calls: int,
    repeat: int,
    json_path: Path | None,
) -> None:
    """Publish-to-obtained latency to waiting consumers: p50, p90, p99.

    One producer publishes a product every --period-ms; each product is
    awaited by one consumer already blocked in add_many.
    """
    _execute(
        json_path,
        lambda progress: run_latency(
            consumers,
            samples=samples,
            period=period_ms / 1000,
            floor_calls=floor_calls,
            repeat=repeat,
            progress=progress,
        ),
    )


@bench.command()
@click.option(
    "--agents",
    type=click.IntRange(min=2),
    default=256,
    show_default=True,
    help="Agents of the run: half producers, half consumers.",
)
@click.option(
    "--churn-seconds",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="Seconds of the churn that checks the server's RSS for a leak.",
)
@click.option(
    "--churn-size",
    type=_Sizes(),
    metavar="PxC",
    default="4x8",
    show_default=True,
    help="PRODUCERSxCONSUMERS of that churn.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the workload.")
@agents_per_process_option
@_repeat_option
@_json_option
def scale(
    agents: int,
    churn_seconds: float,
    churn_size: list[tuple[int, int]],
    seed: int,
    agents_per_process: int,
    repeat: int,
    json_path: Path | None,
) -> None:
    """Start-up time and memory of many agents; server RSS over a churn."""
    if len(churn_size) != 1:
        raise click.BadParameter("give one size, such as 4x8", param_hint="--churn-size")
    _execute(
        json_path,
        lambda progress: run_scale(
            agents,
            churn_seconds=churn_seconds,
            churn_size=churn_size[0],
            seed=seed,
            agents_per_process=agents_per_process,
            repeat=repeat,
            progress=progress,
        ),
    )


@bench.command()
@click.argument(
    "directory", type=click.Path(exists=True, file_okay=False, path_type=Path), metavar="DIR"
)
@agents_per_process_option
@_repeat_option
@_json_option
def course(directory: Path, agents_per_process: int, repeat: int, json_path: Path | None) -> None:
    """Run every *.in of DIR and compare it with the simulated ideal.

    Per case: wall, start-up and market time, the ideal (mpmarket.simulate's
    makespan, n/a without it) and the ratios. A case the simulator finds
    deadlocked is not run.
    """
    _execute(
        json_path,
        lambda progress: run_course(
            directory, repeat=repeat, agents_per_process=agents_per_process, progress=progress
        ),
    )
