"""What a run starts: which agents run here, how they share processes, when it is stalled.

Pure functions of a workload, no processes: ``pick_agents`` (the part of a
workload this machine runs), ``pack_agents`` (the agents of each process) and
``default_stall_timeout``.
"""

from __future__ import annotations

from dataclasses import replace

from mpmarket.core.workload import ConsumerSpec, ProducerSpec, Workload

__all__ = [
    "STALL_FLOOR_S",
    "Member",
    "default_stall_timeout",
    "pack_agents",
    "pack_name",
    "pick_agents",
]

# A run is stalled when no consumer made progress for this long, unless the
# workload's own times call for more (see default_stall_timeout).
STALL_FLOOR_S = 10.0

Member = tuple[str, ProducerSpec | ConsumerSpec]  # an agent of a process: role, spec


def default_stall_timeout(workload: Workload) -> float:
    """Long enough for the slowest legitimate wait of this workload, times three.

    A consumer may wait a whole production cycle of the slowest producer (its
    make times added up) plus a wait time before its product comes.
    """
    cycle = max(
        (sum(step.quantity * step.make_time for step in spec.steps) for spec in workload.producers),
        default=0.0,
    )
    waits = [spec.republish_wait_time for spec in workload.producers]
    waits += [spec.retry_wait_time for spec in workload.consumers]
    return max(STALL_FLOOR_S, 3 * (cycle + max(waits, default=0.0)))


def pick_agents(
    workload: Workload,
    *,
    only: str | None = None,
    names: tuple[str, ...] = (),
    shard: tuple[int, int] | None = None,
) -> Workload:
    """The part of a workload this machine runs, so one file can be split.

    ``only`` keeps the producers or the consumers; ``names`` keeps those
    agents; ``shard`` ``(k, n)`` then keeps every n-th of what is left,
    starting at the k-th (1-based), producers first, in file order: the n
    shards of a workload are disjoint and cover it. ValueError (one line) for
    an unknown name or an empty choice.
    """
    producers, consumers = list(workload.producers), list(workload.consumers)
    if only == "producers":
        consumers = []
    elif only == "consumers":
        producers = []
    elif only is not None:
        raise ValueError(f"--only takes producers or consumers, got {only!r}")
    if names:
        known = {spec.name for spec in workload.producers}
        known |= {spec.name for spec in workload.consumers}
        unknown = [name for name in names if name not in known]
        if unknown:
            raise ValueError(f"no agent named {', '.join(unknown)} in {workload.source}")
        producers = [agent for agent in producers if agent.name in names]
        consumers = [agent for agent in consumers if agent.name in names]
    if shard is not None:
        k, n = shard
        split = len(producers)  # numbered in one sequence, producers first
        producers = [a for i, a in enumerate(producers) if i % n == k - 1]
        consumers = [a for i, a in enumerate(consumers, start=split) if i % n == k - 1]
    if not producers and not consumers:
        raise ValueError(f"no agent of {workload.source} is left to run here")
    return replace(workload, producers=tuple(producers), consumers=tuple(consumers))


def pack_agents(workload: Workload, agents_per_process: int) -> list[list[Member]]:
    """The agents of each process of a run: up to N of one role, in workload order.

    Producers come first, then consumers; a process never holds both.
    """
    packs = []
    for role, specs in (("producer", workload.producers), ("consumer", workload.consumers)):
        for first in range(0, len(specs), agents_per_process):
            packs.append([(role, spec) for spec in specs[first : first + agents_per_process]])
    return packs


def pack_name(members: list[Member]) -> str:
    """An agent process's name: its agent's, or its first and last agents' (``a..b``)."""
    first, last = members[0][1].name, members[-1][1].name
    return first if len(members) == 1 else f"{first}..{last}"
