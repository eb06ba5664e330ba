"""A discrete-event simulation of a workload on the market: no processes, no threads.

Why: a real run takes seconds and its timing is noisy; the simulation tells in
milliseconds, deterministically, what a run should print, how long it should
take at best (its makespan), and whether it can finish at all. When it cannot,
it names who waits for what and what blocks the makers: a deadlock report.

The simulated semantics are those of ``Marketplace`` and the agent loops:

- a producer cycles over its steps; for each unit it publishes (refused while
  it has ``queue_size_per_producer`` units on sale), then spends the make time;
- a consumer runs its operations in order: an add takes units on sale first
  published first, a remove puts the last units added back at the end of the
  queue (and back in its producer's count, even above the cap), and the end of
  a session places the order.

Ideal mode (the default) has zero-cost calls and instant wake-ups, as the
market's direct hand-off gives: a waiting consumer gets a unit the moment one
is published or put back (waiters served first come, first served), and a
blocked producer publishes the moment one of its units is taken. Poll mode
(``poll=True``) is the classic design whose waits are sleeps: a refused publish
sleeps ``republish_wait_time`` and tries again, an add that finds nothing
sleeps ``retry_wait_time`` and tries again.

Ties at equal times are broken by scheduling order (producers start before
consumers, in workload order), so every result is reproducible.
"""

from __future__ import annotations

import heapq
from collections import Counter, deque
from dataclasses import dataclass, field

from mpmarket.core.workload import Workload, purchase_line
from mpmarket.products import Product

__all__ = ["Deadlock", "Simulation", "Stall", "simulate"]


@dataclass(frozen=True)
class Stall:
    """One consumer that can never finish: the product it waits for, and who makes it."""

    consumer: str
    product: Product
    producers: tuple[str, ...]


@dataclass(frozen=True)
class Deadlock:
    """Why a run can never finish, so that a hung run can be explained, not just killed.

    ``time`` is when the last agent got stuck or the market last changed:
    nothing changes after it but futile retries.
    ``slots`` maps each maker of a wanted product to what fills its slots
    (product repr -> units on sale); ``wanted`` holds the reprs of every product
    the stuck consumers still have to add, now or in later operations.
    """

    time: float
    stalls: tuple[Stall, ...]
    slots: dict[str, Counter[str]] = field(hash=False)
    queue_size: int
    wanted: frozenset[str]

    def explain(self) -> list[str]:
        """Human lines: one per stuck consumer, then one per maker of what they wait for."""
        lines = [
            f"deadlock at {self.time:.6g} s: {len(self.stalls)} consumer(s) wait "
            "for products that will never come"
        ]
        for stall in self.stalls:
            makers = ", ".join(stall.producers) if stall.producers else "no producer"
            lines.append(f"{stall.consumer} waits for {stall.product!r} made by {makers}")
        for name, slots in self.slots.items():
            taken = sum(slots.values())
            if not slots:
                lines.append(f"{name} has 0 of {self.queue_size} slots taken")
                continue
            if len(slots) == 1:
                what = next(iter(slots))
            else:
                what = ", ".join(f"{count} {product}" for product, count in slots.items())
            later = [product for product in slots if product in self.wanted]
            if later:
                why = "that the stuck consumers want only after what they wait for"
            else:
                why = "that no remaining consumer wants"
            lines.append(f"{name} has {taken} of {self.queue_size} slots taken by {what} {why}")
        return lines


@dataclass(frozen=True)
class Simulation:
    """The outcome of one simulated run.

    ``makespan`` is when the last consumer placed its last order (0 without
    consumers), None when the run deadlocks. ``purchases`` holds the output
    lines of the orders placed (all of them when the run completes).
    ``published`` counts units published, ``events`` the events processed.
    """

    makespan: float | None
    deadlock: Deadlock | None
    purchases: Counter[str] = field(hash=False)
    published: int
    events: int


# Event kinds. An event is (time, sequence number, kind, agent index); the
# sequence number makes the order of equal times that of scheduling.
_PRODUCE = 0  # a producer is ready to publish its next unit
_CONSUME = 1  # a consumer goes on with its operations


class _Run:
    """The state of one simulation, indexed by small ints for speed.

    Products, producers and consumers are numbered; ``on_sale[product]`` is a
    FIFO of the producer ids of its units on sale, ``count[producer]`` how many
    units of that producer are on sale, ``waiters[product]`` the consumers
    waiting for it (ideal mode), ``carts[consumer]`` product -> producer ids.
    """

    def __init__(self, workload: Workload, poll: bool) -> None:
        self.workload = workload
        self.poll = poll
        self.cap = workload.queue_size_per_producer
        self.products: list[Product] = []
        index: dict[Product, int] = {}

        def number(product: Product) -> int:
            if product not in index:
                index[product] = len(self.products)
                self.products.append(product)
            return index[product]

        # Per producer: the cycle of its steps as (product, quantity, make time).
        self.steps = [
            [(number(s.product), s.quantity, s.make_time) for s in spec.steps if s.quantity > 0]
            for spec in workload.producers
        ]
        self.ops = [
            [
                [(op.action == "add", number(op.product), op.quantity) for op in session]
                for session in spec.sessions
            ]
            for spec in workload.consumers
        ]
        nprod = len(self.products)
        self.on_sale: list[deque[int]] = [deque() for _ in range(nprod)]
        self.waiters: list[deque[int]] = [deque() for _ in range(nprod)]
        self.count = [0] * len(workload.producers)
        self.step = [0] * len(workload.producers)  # index into steps
        self.made = [0] * len(workload.producers)  # units of that step published
        self.blocked = [-1] * len(workload.producers)  # product waiting to be published
        self.carts: list[dict[int, list[int]]] = [{} for _ in workload.consumers]
        self.session = [0] * len(workload.consumers)
        self.position = [0] * len(workload.consumers)  # next operation of the session
        self.missing = [0] * len(workload.consumers)  # units the current add still needs
        self.waiting_for = [-1] * len(workload.consumers)
        self.purchases: Counter[str] = Counter()
        self.heap: list[tuple[float, int, int, int]] = []
        self.sequence = 0
        self.now = 0.0
        self.published = 0
        self.remaining = 0
        # Poll mode: a retry is futile while the market is as it was when the
        # same agent last failed; ``version`` counts market changes.
        self.version = 0
        # Agent keys: producer ``p`` is ``p``, consumer ``c`` is ``len(producers) + c``.
        self.first_consumer = len(workload.producers)
        agents = len(workload.producers) + len(workload.consumers)
        self.failed_at = [-1] * agents  # the version at which its last attempt failed
        self.retrying = [False] * agents
        self.futile = 0  # events in the heap that are futile retries
        self.parked: list[tuple[int, int]] = []  # zero-wait retries, run at the next change
        self.progress_time = 0.0

    # -- scheduling ----------------------------------------------------------

    def schedule(self, time: float, kind: int, agent: int) -> None:
        self.sequence += 1
        heapq.heappush(self.heap, (time, self.sequence, kind, agent))

    def changed(self) -> None:
        """The market changed: every failed retry may now succeed."""
        self.version += 1
        self.futile = 0
        self.progress_time = self.now
        if self.parked:
            for kind, agent in self.parked:
                self.schedule(self.now, kind, agent)
            self.parked.clear()

    def retry(self, kind: int, agent: int, key: int, wait: float) -> None:
        """Poll mode: an attempt failed; try again after ``wait``.

        The retry is futile until the market changes: it would fail the same way.
        """
        self.failed_at[key] = self.version
        self.retrying[key] = True
        if wait <= 0:
            self.parked.append((kind, agent))  # a spin: it can only succeed after a change
            return
        self.schedule(self.now + wait, kind, agent)
        self.futile += 1

    # -- the market ----------------------------------------------------------

    def put_on_sale(self, producer: int, product: int) -> None:
        """A unit goes on sale, or straight into the cart of the first waiter."""
        waiters = self.waiters[product]
        if waiters:
            consumer = waiters[0]
            self.carts[consumer].setdefault(product, []).append(producer)
            self.missing[consumer] -= 1
            if self.missing[consumer] == 0:
                waiters.popleft()
                self.waiting_for[consumer] = -1
                self.schedule(self.now, _CONSUME, consumer)
            return
        self.on_sale[product].append(producer)
        self.count[producer] += 1

    def take(self, consumer: int, product: int, quantity: int) -> int:
        """Move up to ``quantity`` units on sale into the cart, oldest first."""
        queue = self.on_sale[product]
        if not queue or quantity <= 0:
            return 0
        units = self.carts[consumer].setdefault(product, [])
        taken = 0
        while queue and taken < quantity:
            producer = queue.popleft()
            units.append(producer)
            self.count[producer] -= 1
            taken += 1
            if self.blocked[producer] >= 0 and self.count[producer] < self.cap:
                self.slot_freed(producer)  # not while removes keep it at or above the cap
        return taken

    def slot_freed(self, producer: int) -> None:
        """Ideal mode: the blocked producer publishes its unit, then makes the next."""
        product = self.blocked[producer]
        self.blocked[producer] = -1
        self.publish(producer, product)

    def publish(self, producer: int, product: int) -> None:
        """Publish one unit, move on to the next, and spend the make time."""
        self.published += 1
        self.changed()
        self.put_on_sale(producer, product)
        _, quantity, make_time = self.steps[producer][self.step[producer]]
        self.made[producer] += 1
        if self.made[producer] == quantity:
            self.made[producer] = 0
            self.step[producer] = (self.step[producer] + 1) % len(self.steps[producer])
        self.schedule(self.now + make_time, _PRODUCE, producer)

    # -- the agents ----------------------------------------------------------

    def produce(self, producer: int) -> None:
        """The producer tries to publish its current unit."""
        product = self.steps[producer][self.step[producer]][0]
        if self.count[producer] < self.cap:
            self.retrying[producer] = False
            self.publish(producer, product)
        elif self.poll:
            wait = self.workload.producers[producer].republish_wait_time
            self.retry(_PRODUCE, producer, producer, wait)
        else:
            self.blocked[producer] = product

    def consume(self, consumer: int) -> None:
        """The consumer runs operations until one must wait or all are done."""
        sessions = self.ops[consumer]
        cart = self.carts[consumer]
        while self.session[consumer] < len(sessions):
            ops = sessions[self.session[consumer]]
            while self.position[consumer] < len(ops):
                is_add, product, quantity = ops[self.position[consumer]]
                if is_add:
                    if self.waiting_for[consumer] < 0:
                        self.missing[consumer] = quantity
                    taken = self.take(consumer, product, self.missing[consumer])
                    self.missing[consumer] -= taken
                    if taken:
                        self.changed()
                    if self.missing[consumer] > 0:
                        self.waiting_for[consumer] = product
                        if self.poll:
                            wait = self.workload.consumers[consumer].retry_wait_time
                            key = self.first_consumer + consumer
                            self.retry(_CONSUME, consumer, key, wait)
                        else:
                            self.waiters[product].append(consumer)
                            self.position[consumer] += 1  # resumed once it has them all
                        return
                    self.waiting_for[consumer] = -1
                    self.retrying[self.first_consumer + consumer] = False
                else:
                    units = cart.get(product)
                    removed = 0
                    while units and removed < quantity:
                        self.put_on_sale(units.pop(), product)
                        removed += 1
                    if removed:
                        self.changed()
                self.position[consumer] += 1
            name = self.workload.consumers[consumer].name
            for product, units in cart.items():
                if units:
                    self.purchases[purchase_line(name, self.products[product])] += len(units)
            cart.clear()
            self.changed()
            self.session[consumer] += 1
            self.position[consumer] = 0
        self.remaining -= 1

    # -- the run ---------------------------------------------------------------

    def run(self) -> Simulation:
        for producer, steps in enumerate(self.steps):
            if steps:
                self.schedule(0.0, _PRODUCE, producer)
        self.remaining = len(self.workload.consumers)
        for consumer in range(len(self.workload.consumers)):
            self.schedule(0.0, _CONSUME, consumer)
        events = 0
        makespan = 0.0
        heap = self.heap
        while self.remaining:
            if self.futile == len(heap):  # only futile retries, or nothing, is left
                return Simulation(None, self.deadlock(), self.purchases, self.published, events)
            time, _, kind, agent = heapq.heappop(heap)
            events += 1
            self.now = time
            key = agent if kind == _PRODUCE else self.first_consumer + agent
            if self.failed_at[key] == self.version:
                self.futile -= 1  # a futile retry: it fails again and changes nothing
            elif not self.retrying[key]:
                self.progress_time = time  # an agent's state changes
            if kind == _PRODUCE:
                self.produce(agent)
            else:
                self.consume(agent)
                if not self.remaining:
                    makespan = time
        return Simulation(makespan, None, self.purchases, self.published, events)

    def deadlock(self) -> Deadlock:
        """Describe the stuck state: who waits for what, and what fills its makers' slots."""
        names = [spec.name for spec in self.workload.producers]
        makers: dict[int, tuple[int, ...]] = {}
        for producer, steps in enumerate(self.steps):
            for product, _, _ in steps:
                if producer not in makers.get(product, ()):
                    makers[product] = (*makers.get(product, ()), producer)
        stalls = []
        involved: set[int] = set()
        wanted: set[str] = set()
        for consumer, spec in enumerate(self.workload.consumers):
            product = self.waiting_for[consumer]
            if product < 0:
                continue
            involved.update(makers.get(product, ()))
            stalls.append(
                Stall(
                    spec.name,
                    self.products[product],
                    tuple(names[p] for p in makers.get(product, ())),
                )
            )
            # Everything it still has to add: the rest of this session and the next ones.
            session = self.session[consumer]
            start = self.position[consumer] - (0 if self.poll else 1)
            rest = self.ops[consumer][session][start:]
            for later in self.ops[consumer][session + 1 :]:
                rest = rest + later
            wanted.update(repr(self.products[p]) for is_add, p, _ in rest if is_add)
        slots: dict[str, Counter[str]] = {names[p]: Counter() for p in sorted(involved)}
        for product, queue in enumerate(self.on_sale):
            for producer in queue:
                if producer in involved:
                    slots[names[producer]][repr(self.products[product])] += 1
        return Deadlock(self.progress_time, tuple(stalls), slots, self.cap, frozenset(wanted))


def simulate(workload: Workload, *, poll: bool = False) -> Simulation:
    """Simulate ``workload`` to the last order, or to a deadlock, in virtual time.

    Ideal mode (default) models instant hand-offs; ``poll=True`` the classic
    sleep-and-retry waits. Deterministic: the same workload gives the same result.
    """
    return _Run(workload, poll).run()
