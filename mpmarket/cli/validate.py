"""``mpmarket validate``: check workload files and say what each holds.

Kept light: it imports neither rich nor the run, view or bench layers.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from mpmarket.cli.exitcodes import EPILOG, ExitCode
from mpmarket.cli.output import echo
from mpmarket.core.load import STDIN, STDIN_NAME, load_workload
from mpmarket.core.simulate import simulate
from mpmarket.errors import WorkloadError

__all__ = ["validate"]


@click.command(epilog=EPILOG)
@click.argument(
    "configs",
    nargs=-1,
    required=True,
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
)
def validate(configs: tuple[Path, ...]) -> None:
    """Check workload files and say what each holds, or what is wrong.

    For each file: its agents, products, sessions and the products any correct
    run buys, and whether the simulation predicts a deadlock; or one line
    naming the file, the field and what was expected. Exit 2 if any file is
    wrong, 3 if any deadlocks, else 0. "-" reads a workload from stdin, named
    <stdin> (JSON if it starts with "{", else TOML).

    \b
    Examples:
      mpmarket validate configs/*.toml
      mpmarket gen - --seed 3 | mpmarket validate -
    """
    if sum(str(config) == STDIN for config in configs) > 1:
        raise click.UsageError('"-" (stdin) given more than once: it can be read once')
    worst = ExitCode.OK
    for path in configs:
        config = STDIN_NAME if str(path) == STDIN else str(path)
        try:
            workload = load_workload(path)
        except WorkloadError as error:
            click.echo(f"mpmarket: error: {error}", err=True)
            worst = ExitCode.USAGE
            continue
        kinds = {step.product for spec in workload.producers for step in spec.steps}
        kinds |= {op.product for spec in workload.consumers for s in spec.sessions for op in s}
        outcome = simulate(workload)
        echo(
            f"{config}: {len(workload.producers)} producers, {len(workload.consumers)} consumers, "
            f"{len(kinds)} products, {workload.sessions} sessions, "
            f"{workload.products_to_buy} products to buy, queue size "
            f"{workload.queue_size_per_producer}"
        )
        if outcome.deadlock is not None:
            for line in outcome.deadlock.explain():
                echo(f"{config}: {line}")
            if worst == ExitCode.OK:
                worst = ExitCode.DEADLOCK
        else:
            echo(f"{config}: ideal makespan {outcome.makespan:.3f} s")
    sys.exit(worst)
