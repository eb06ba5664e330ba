"""What the ``mpmarket bench`` commands share: the table of medians, the run, the options.

``format_result`` renders a ``BenchResult`` as one rich table; ``_execute``
runs a benchmark, prints its table on stderr, writes its JSON and exits with
the ``mpmarket`` command's codes.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from mpmarket.bench.results import BenchResult, Case, parse_sizes
from mpmarket.cli.exitcodes import ExitCode, fail
from mpmarket.cli.output import write_file
from mpmarket.errors import MarketUnavailableError, MpmarketError, WorkloadError
from mpmarket.proc.interrupts import Interrupts
from mpmarket.view.console import new_console

__all__ = ["FIGURES", "cli_designs", "design_names", "format_result"]


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
    "bought_vs_classic": ("bought/s ÷ classic", "{:.2f}"),
    "wake_p50_us": ("wake floor p50 µs", "{:.0f}"),
    "wake_p99_us": ("wake floor p99 µs", "{:.0f}"),
    "p50_vs_wake_rt": ("p50 ÷ (wake + rt)", "{:.2f}"),
    "p99_vs_wake_rt": ("p99 ÷ (wake + rt)", "{:.2f}"),
    "p50_vs_classic": ("p50 ÷ classic", "{:.2f}"),
    "p99_vs_classic": ("p99 ÷ classic", "{:.2f}"),
    "shutdown_s": ("shutdown s", "{:.3f}"),
    "wall_minus_ideal_s": ("wall - ideal s", "{:+.3f}"),
    "wall_vs_classic_threads": ("wall ÷ classic threads", "{:.2f}"),
    "wall_minus_classic_threads_s": ("wall - classic threads s", "{:+.3f}"),
    "wall_vs_classic_processes": ("wall ÷ classic processes", "{:.2f}"),
    "market_vs_classic_threads": ("market ÷ classic threads", "{:.2f}"),
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
    console = new_console(stderr=True)

    def progress(message: str) -> None:
        console.print(f"[dim]{message}[/]", highlight=False, soft_wrap=True)

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
        console.print(
            f"[bold red]mpmarket: check failed:[/] {failure}", highlight=False, soft_wrap=True
        )
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


class _Names(click.ParamType):
    """A comma-separated list of names, each one of ``choices``: ``own,course-api``."""

    name = "NAME,NAME..."

    def __init__(self, choices: tuple[str, ...]) -> None:
        self.choices = choices

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> list[str]:
        if isinstance(value, list | tuple):
            return list(value)
        names = [part.strip() for part in str(value).split(",")]
        for name in names:
            if name not in self.choices:
                self.fail(f"{name!r} is not one of {', '.join(self.choices)}", param, ctx)
        return names


def design_names(designs: tuple[str, ...]) -> tuple[str, ...]:
    """The designs as the command line spells them: ``classic processes`` is ``classic-processes``."""
    return tuple(design.replace(" ", "-") for design in designs)


def cli_designs(names: list[str]) -> list[str]:
    """The designs of command-line names."""
    return [name.replace("-", " ") for name in names]
