"""Which options of a run go together, and the workload they describe.

``mpmarket run`` (and ``simulate``) parse their flags and hand them here;
the rules live in this module so that tests call them directly. A broken rule
is a ``RunOptionsError`` (a ``ValueError``) whose message names the options
by their flags: the command line shows it as a usage error, word for word.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from mpmarket.core.generate import generate
from mpmarket.core.load import load_workload
from mpmarket.core.workload import Workload

__all__ = ["RunOptionsError", "check_run_options", "workload_from_options"]

# Without CONFIG, a generated workload of this many producers and consumers.
DEFAULT_PRODUCERS = 4
DEFAULT_CONSUMERS = 8


class RunOptionsError(ValueError):
    """Options that do not go together; the message names them by their flags."""


def check_run_options(
    *,
    connect: object | None,
    only: str | None = None,
    agents: str | None = None,
    shard: tuple[int, int] | None = None,
    close_market: bool = False,
    authkey_file: Path | None = None,
    log_file: Path | None = None,
    queue_size: int | None = None,
    market: str = "mpmarket",
) -> None:
    """Refuse the options of ``mpmarket run`` that do not go with ``connect``.

    Without ``connect`` (no ``--connect``), none of the options that pick this
    machine's part of a served market's run (--only, --agents, --shard,
    --close-market, --authkey-file). With it, none of those the server decides
    (--log-file, --queue-size): they belong to ``mpmarket serve``, which
    serves mpmarket's market only (not --market classic). A value of None (or
    a False flag) is an option not given.
    """
    if connect is None:
        remote_only = {
            "--only": only,
            "--agents": agents,
            "--shard": shard,
            "--close-market": close_market or None,
            "--authkey-file": authkey_file,
        }
        given = [option for option, value in remote_only.items() if value is not None]
        if given:
            raise RunOptionsError(f"{', '.join(given)} only go with --connect")
    else:
        if market != "mpmarket":
            raise RunOptionsError(f"--market {market} runs its own server: not with --connect")
        server_side = {"--log-file": log_file, "--queue-size": queue_size}
        given = [option for option, value in server_side.items() if value is not None]
        if given:
            raise RunOptionsError(
                f"{', '.join(given)}: the server decides this; give it to mpmarket serve"
            )


def workload_from_options(
    config: Path | None,
    producers: int | None,
    consumers: int | None,
    sessions: int,
    seed: int,
    queue_size: int | None,
) -> Workload:
    """The workload the options describe.

    CONFIG, or one generated from ``producers`` and ``consumers`` (4 and 8 by
    default), never both: RunOptionsError. A bad file is a WorkloadError.
    ``queue_size`` overrides the workload's.
    """
    if config is not None:
        if producers is not None or consumers is not None:
            raise RunOptionsError("give either CONFIG or --producers/--consumers, not both")
        workload = load_workload(config)
    else:
        workload = generate(
            producers if producers is not None else DEFAULT_PRODUCERS,
            consumers if consumers is not None else DEFAULT_CONSUMERS,
            sessions=sessions,
            seed=seed,
        )
    if queue_size is not None:
        workload = replace(workload, queue_size_per_producer=queue_size)
    return workload
