"""The generator: a seeded random workload that cannot deadlock (``generate``)."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence

from mpmarket.core.workload import (
    DEFAULT_QUEUE_SIZE,
    ConsumerSpec,
    Op,
    ProducerSpec,
    ProductionStep,
    Workload,
)
from mpmarket.errors import WorkloadError
from mpmarket.products import Coffee, Product, Tea

__all__ = ["generate", "random_producers", "random_session"]


CATALOG: tuple[Product, ...] = (
    Tea("Linden", 9, "Herbal"),
    Coffee("Indonezia", 1, 5.05, "MEDIUM"),
    Tea("Earl Grey", 7, "Black"),
    Coffee("Arabica", 3, 5.02, "LIGHT"),
    Tea("Sencha", 11, "Green"),
    Coffee("Robusta", 2, 4.8, "DARK"),
    Tea("Rooibos", 6, "Herbal"),
    Coffee("Kenya AA", 5, 6.1, "MEDIUM"),
)


def random_producers(
    rng: random.Random,
    count: int,
    in_play: Sequence[Product],
    make_time: Callable[[], float],
    wait_time: Callable[[], float],
) -> list[ProducerSpec]:
    """``count`` producers: the first ones one kind in play each, the others a mix
    of up to three; each step makes 1-3 units, times drawn from the callables."""
    producers = []
    for index in range(count):
        if index < len(in_play):
            made = [in_play[index]]
        else:
            made = rng.sample(in_play, rng.randint(1, min(3, len(in_play))))
        steps = tuple(ProductionStep(p, rng.randint(1, 3), make_time()) for p in made)
        producers.append(ProducerSpec(f"prod{index + 1}", steps, wait_time()))
    return producers


def random_session(
    rng: random.Random, in_play: Sequence[Product], *, removes: float
) -> tuple[Op, ...]:
    """One to four operations: adds of 1-3 units of a product in play, or, with
    probability ``removes``, a remove of some of what the session holds."""
    ops: list[Op] = []
    held: Counter[Product] = Counter()
    for _ in range(rng.randint(1, 4)):
        if held and rng.random() < removes:
            product = rng.choice(sorted(held, key=repr))
            quantity = rng.randint(1, held[product])
            held[product] -= quantity
            held = +held
            ops.append(Op("remove", product, quantity))
        else:
            product = rng.choice(in_play)
            quantity = rng.randint(1, 3)
            held[product] += quantity
            ops.append(Op("add", product, quantity))
    return tuple(ops)


def generate(
    producers: int = 4,
    consumers: int = 8,
    *,
    sessions: int = 3,
    seed: int = 0,
    queue_size: int = DEFAULT_QUEUE_SIZE,
    make_time: float = 0.004,
    wait_time: float = 0.01,
    kinds: int | None = None,
) -> Workload:
    """A random workload, reproducible from ``seed``, that cannot deadlock.

    A run can only starve when every producer of a wanted product is stuck with
    its slots full of products nobody wants. So the first producers each make
    a single kind (one per kind in play): a single-kind producer with full
    slots has its whole queue on sale for whoever waits on that kind. Other
    producers make mixes of those kinds, and consumers only want kinds in play.
    Removes never exceed what the session holds. ``kinds`` (default: one per
    producer, up to eight) leaves producers beyond the first ``kinds`` making
    mixes only: any of them can die without starving anyone.
    """
    if producers < 1 or consumers < 0 or sessions < 0 or queue_size < 1:
        raise WorkloadError(
            "<generated>", "producers/consumers/sessions/queue-size", "at least 1/0/0/1"
        )
    rng = random.Random(seed)
    if kinds is not None and not 1 <= kinds <= min(producers, len(CATALOG)):
        raise WorkloadError(
            "<generated>", "kinds", f"from 1 to {min(producers, len(CATALOG))}", str(kinds)
        )
    in_play = list(CATALOG[: kinds if kinds is not None else min(producers, len(CATALOG))])

    def times(base: float) -> float:
        return round(base * rng.uniform(0.5, 1.5), 6)

    producer_specs = random_producers(
        rng, producers, in_play, lambda: times(make_time), lambda: times(wait_time)
    )

    consumer_specs = []
    for index in range(consumers):
        session_list = []
        for _ in range(sessions):
            session_list.append(random_session(rng, in_play, removes=0.25))
        consumer_specs.append(
            ConsumerSpec(f"cons{index + 1}", times(wait_time), tuple(session_list))
        )
    return Workload(tuple(producer_specs), tuple(consumer_specs), queue_size)
