"""``mpmarket simulate``: a workload's ideal makespan, or its deadlock, without running it."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from mpmarket.cli.exitcodes import EPILOG, ExitCode, fail
from mpmarket.cli.options import workload_options
from mpmarket.cli.output import echo
from mpmarket.core.simulate import simulate
from mpmarket.errors import WorkloadError
from mpmarket.run.settings import RunOptionsError, workload_from_options
from mpmarket.view.console import new_console
from mpmarket.view.summary import format_simulation

__all__ = ["simulate_command"]


@click.command(name="simulate", epilog=EPILOG)
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
    producers' slots) and exits with code 3. CONFIG "-" reads the workload
    from stdin (JSON if it starts with "{", else TOML).

    \b
    Examples:
      mpmarket simulate configs/busy-market.toml --poll
      mpmarket simulate --producers 16 --consumers 32 --seed 3
    """
    console = new_console(stderr=True)
    try:
        workload = workload_from_options(config, producers, consumers, sessions, seed, queue_size)
    except RunOptionsError as error:
        raise click.UsageError(str(error)) from None
    except WorkloadError as error:
        fail(console, str(error), ExitCode.USAGE)
    ideal = simulate(workload)
    for line in format_simulation(ideal, "ideal"):
        echo(line)
    if poll:
        for line in format_simulation(simulate(workload, poll=True), "polling"):
            echo(line)
    sys.exit(ExitCode.DEADLOCK if ideal.deadlock else ExitCode.OK)
