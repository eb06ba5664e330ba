"""``mpmarket gen``: write a generated workload, to edit and run."""

from __future__ import annotations

from pathlib import Path

import click

from mpmarket.cli.exitcodes import EPILOG, ExitCode, fail
from mpmarket.cli.options import FiniteFloat
from mpmarket.cli.output import echo
from mpmarket.core.dump import dump_course_json, dump_toml
from mpmarket.core.generate import generate
from mpmarket.view.console import new_console

__all__ = ["gen"]


@click.command(epilog=EPILOG)
@click.argument(
    "output", required=False, type=click.Path(dir_okay=False, allow_dash=True, path_type=Path)
)
@click.option(
    "--output",
    "-o",
    "output_option",
    metavar="FILE",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    help='Write the workload to FILE ("-" for stdout): the same as OUTPUT.',
)
@click.option(
    "--producers",
    "-p",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Producers to generate.",
)
@click.option(
    "--consumers",
    "-c",
    type=click.IntRange(min=0),
    default=8,
    show_default=True,
    help="Consumers to generate.",
)
@click.option(
    "--sessions",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    help="Shopping sessions per consumer.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the generator.")
@click.option(
    "--queue-size",
    type=click.IntRange(min=1),
    default=15,
    show_default=True,
    help="Products one producer may have on sale.",
)
@click.option(
    "--make-time",
    type=FiniteFloat(min=0),
    default=0.004,
    show_default=True,
    help="Typical seconds to make one product (each producer varies it by up to 50 %).",
)
@click.option(
    "--wait-time",
    type=FiniteFloat(min=0),
    default=0.01,
    show_default=True,
    help="Typical retry and republish wait (varied the same way).",
)
@click.option(
    "--format",
    "file_format",
    type=click.Choice(["toml", "course"]),
    default="toml",
    show_default=True,
    help="mpmarket's TOML, or the course's JSON.",
)
def gen(
    output: Path | None,
    output_option: Path | None,
    producers: int,
    consumers: int,
    sessions: int,
    seed: int,
    queue_size: int,
    make_time: float,
    wait_time: float,
    file_format: str,
) -> None:
    """Write a generated workload to OUTPUT or -o FILE ("-" for stdout), to edit and run.

    The same generator as `mpmarket run --producers N --consumers M`: the same
    flags give the same workload, and it never deadlocks.

    \b
    Examples:
      mpmarket gen market.toml --producers 6 --consumers 12 --seed 3
      mpmarket gen case.json --format course && mpmarket run case.json
      mpmarket gen -o market.toml --seed 3
      mpmarket gen - | mpmarket run -
    """
    if output is not None and output_option is not None:
        raise click.UsageError(
            f"give the output once: OUTPUT ({output}) or -o/--output ({output_option}), not both"
        )
    output = output if output is not None else output_option
    if output is None:
        raise click.UsageError('missing OUTPUT: a file, or "-" for stdout (or -o FILE)')
    workload = generate(
        producers,
        consumers,
        sessions=sessions,
        seed=seed,
        queue_size=queue_size,
        make_time=make_time,
        wait_time=wait_time,
    )
    text = dump_toml(workload) if file_format == "toml" else dump_course_json(workload)
    if str(output) == "-":
        echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as error:
        fail(new_console(stderr=True), f"{output}: cannot write: {error.strerror}", ExitCode.USAGE)
    new_console(stderr=True).print(
        f"wrote {output}: {producers} producers, {consumers} consumers, "
        f"{workload.products_to_buy} products to buy",
        highlight=False,
    )
