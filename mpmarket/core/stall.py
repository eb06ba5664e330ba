"""Explaining a stalled run from the live market: who waits for what, and why.

When no consumer makes progress for a while, the runner asks the market who
is blocked (``Marketplace.waits()``) and turns it, with the workload, into the
same ``Deadlock`` description that ``mpmarket simulate`` gives for a predicted
deadlock, so both read alike: which consumers wait for which product, which
producers make it, and what fills their slots.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from mpmarket.core.books import MarketWaits
from mpmarket.core.simulate import Deadlock, Stall
from mpmarket.core.workload import Op, Workload
from mpmarket.products import Product

__all__ = ["diagnose"]


def diagnose(
    waits: MarketWaits,
    workload: Workload,
    consumer_of_cart: Mapping[int, str],
    producer_of_id: Mapping[int, str],
    remaining_ops: Mapping[str, list[Op]],
    stalled_s: float,
) -> Deadlock:
    """Describe a stall: ``remaining_ops`` holds each unfinished consumer's ops left."""
    makers: dict[Product, list[str]] = {}
    for spec in workload.producers:
        for step in spec.steps:
            if step.quantity and spec.name not in makers.get(step.product, []):
                makers.setdefault(step.product, []).append(spec.name)
    stalls = []
    involved: list[str] = []
    for cart_id, product, _missing in waits.consumers:
        name = consumer_of_cart.get(cart_id, f"cart {cart_id}")
        producers = tuple(makers.get(product, ()))
        stalls.append(Stall(name, product, producers))
        involved += [p for p in producers if p not in involved]
    wanted = frozenset(
        repr(op.product) for ops in remaining_ops.values() for op in ops if op.action == "add"
    )
    names_to_ids = {name: producer_id for producer_id, name in producer_of_id.items()}
    slots: dict[str, Counter[str]] = {}
    for name in involved:
        held = waits.slots.get(names_to_ids.get(name, -1), ())
        slots[name] = Counter({repr(product): count for product, count in held})
    return Deadlock(stalled_s, tuple(stalls), slots, waits.queue_size_per_producer, wanted)
