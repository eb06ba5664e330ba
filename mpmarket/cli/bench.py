"""The ``mpmarket bench`` commands: parse, call ``mpmarket.bench``, print.

Each command prints one table on stderr (medians over ``--repeat`` rounds;
min and max are in the ``--json`` file) and exits with the codes of the
``mpmarket`` command: 0 success, 1 a run failed or a check did not hold,
2 bad usage, 4 the market could not be reached or went away, 130 interrupted.
"""

from __future__ import annotations

from pathlib import Path

import click

from mpmarket.bench.apichurn import API_WAIT
from mpmarket.bench.churn import CHURN_ADD_WAIT, CHURN_MODES, run_churn
from mpmarket.bench.classic import DESIGNS
from mpmarket.bench.course import COURSE_DESIGNS, run_course
from mpmarket.bench.floor import run_floor
from mpmarket.bench.latency import CLASSIC_RETRY_WAIT, run_latency
from mpmarket.bench.scale import run_scale
from mpmarket.bench.wide import WIDE_SESSIONS, run_wide
from mpmarket.cli.bench_common import (
    _execute,
    _floor_calls_option,
    _IntList,
    _json_option,
    _Names,
    _repeat_option,
    _Sizes,
    cli_designs,
    design_names,
    format_result,
)
from mpmarket.cli.options import FiniteFloat, agents_per_process_option

__all__ = ["bench", "format_result"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def bench() -> None:
    """Measure this machine and the market: floor, churn, latency, scale, course, wide.

    Each command prints a table of medians on stderr and can write --json.
    Ratios are against a floor (a no-op manager call) and the classic design
    (the course's, as processes or threads) measured in the same invocation. Exit codes: 0 success, 1 a run failed or a check did not
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
    type=FiniteFloat(min=0, min_open=True),
    default=10.0,
    show_default=True,
    help="Seconds of churn per size and round.",
)
@click.option(
    "--add-wait-ms",
    type=FiniteFloat(min=0, min_open=True),
    default=CHURN_ADD_WAIT * 1000,
    show_default=True,
    help="How long a consumer's add waits before it tries another kind.",
)
@click.option(
    "--api-wait-ms",
    type=FiniteFloat(min=0, min_open=True),
    default=API_WAIT * 1000,
    show_default=True,
    help="The course-API churn's wait after a refused publish or add.",
)
@click.option(
    "--modes",
    type=_Names(CHURN_MODES),
    metavar="MODE,...",
    default=",".join(CHURN_MODES),
    show_default=True,
    help="The churns of mpmarket to measure: its own API, the course's.",
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
    api_wait_ms: float,
    modes: list[str],
    seed: int,
    floor_calls: int,
    repeat: int,
    json_path: Path | None,
) -> None:
    """Products bought per second under full load, against the floor and the classic.

    Own churn: producers publish eight kinds round robin without make time;
    consumers run endless sessions of three adds, maybe a remove, and an
    order. Course-API churn: four kinds, one unit an add, another random
    kind after a refusal or --api-wait-ms; every third add a remove, every
    tenth an order. The course-API churn on the classic design (processes
    on a stock manager, sleeping client-side) is measured in every round.
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
            api_wait=api_wait_ms / 1000,
            modes=modes,
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
    type=FiniteFloat(min=0),
    default=1.0,
    show_default=True,
    help="Milliseconds between two publishes.",
)
@click.option(
    "--classic-retry-ms",
    type=FiniteFloat(min=0, min_open=True),
    default=CLASSIC_RETRY_WAIT * 1000,
    show_default=True,
    help="How long a classic consumer sleeps between two tries.",
)
@_floor_calls_option
@_repeat_option
@_json_option
def latency(
    consumers: list[int],
    samples: int,
    period_ms: float,
    classic_retry_ms: float,
    floor_calls: int,
    repeat: int,
    json_path: Path | None,
) -> None:
    """Publish-to-obtained latency to waiting consumers: p50, p90, p99.

    One producer publishes a product every --period-ms; each product is
    awaited by one consumer already blocked in add_many. In every round,
    the wake floor (one message to a process idle in recv) and the classic
    design (consumers that try, sleep and try again) too.
    """
    _execute(
        json_path,
        lambda progress: run_latency(
            consumers,
            samples=samples,
            period=period_ms / 1000,
            floor_calls=floor_calls,
            classic_retry_wait=classic_retry_ms / 1000,
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
    type=FiniteFloat(min=0, min_open=True),
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
@click.option(
    "--designs",
    type=_Names(design_names(COURSE_DESIGNS)),
    metavar="DESIGN,...",
    default=",".join(design_names(COURSE_DESIGNS)),
    show_default=True,
    help="The designs to run each case on.",
)
@_repeat_option
@_json_option
def course(
    directory: Path,
    agents_per_process: int,
    designs: list[str],
    repeat: int,
    json_path: Path | None,
) -> None:
    """Run every *.in of DIR and compare it with the simulated ideal and the classic.

    Per case and design: wall, start-up and market time, the ideal
    (mpmarket.simulate's makespan, n/a without it) and the ratios. The
    classic design runs as processes on a stock manager and as threads in
    this process, the course's own shape. A case the simulator finds
    deadlocked is not run.
    """
    _execute(
        json_path,
        lambda progress: run_course(
            directory,
            repeat=repeat,
            agents_per_process=agents_per_process,
            designs=cli_designs(designs),
            progress=progress,
        ),
    )


@bench.command()
@click.option(
    "--wide",
    "wide_size",
    type=_Sizes(),
    metavar="PxC",
    default="64x256",
    show_default=True,
    help="PRODUCERSxCONSUMERS of the wide shape: eight kinds.",
)
@click.option(
    "--one-kind",
    type=_Sizes(),
    metavar="PxC",
    default="16x128",
    show_default=True,
    help="PRODUCERSxCONSUMERS of the one-kind shape, with many removes.",
)
@click.option(
    "--sessions",
    type=click.IntRange(min=1),
    default=WIDE_SESSIONS,
    show_default=True,
    help="Sessions per consumer.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the workloads.")
@click.option(
    "--designs",
    type=_Names(design_names(DESIGNS)),
    metavar="DESIGN,...",
    default=",".join(design_names(DESIGNS)),
    show_default=True,
    help="The designs to run each shape on.",
)
@_repeat_option
@_json_option
def wide(
    wide_size: list[tuple[int, int]],
    one_kind: list[tuple[int, int]],
    sessions: int,
    seed: int,
    designs: list[str],
    repeat: int,
    json_path: Path | None,
) -> None:
    """Generated wide, fast workloads: start-up, market time, against the ideal and the classic.

    Two shapes, make and retry times of 1 to 20 ms, in the course JSON's
    shape: --wide (eight kinds) and --one-kind (one kind, many removes).
    Each runs on mpmarket (one agent a process, and packed by 8), and on the
    classic design as processes and as threads.
    """
    for option, sizes in (("--wide", wide_size), ("--one-kind", one_kind)):
        if len(sizes) != 1:
            raise click.BadParameter("give one size, such as 16x128", param_hint=option)
    _execute(
        json_path,
        lambda progress: run_wide(
            wide_size[0],
            one_kind[0],
            sessions=sessions,
            seed=seed,
            designs=cli_designs(designs),
            repeat=repeat,
            progress=progress,
        ),
    )
