"""The Marketplace: the in-process, thread-safe state machine of the market.

It knows nothing of processes. The server hosts one instance and serves every
connection from one thread (``mpmarket.net.loop``), but it is not the only
thread to call in: ``mpmarket serve`` expires idle carts from another, and an
agent running in a thread uses the very same object directly. So every public
method takes the market's lock.

State, all guarded by ``self._lock`` (the only lock; see "Locking" below):

- ``_on_sale``: product -> FIFO of the producer ids of the units on sale, so
  "the first product on sale that equals X" is ``_on_sale[X][0]``: no scan.
- ``_on_sale_per_producer``: producer id -> how many of its units are on sale
  (the cap applies to it).
- ``_carts``: cart id -> product -> producer ids of the units in the cart.
- ``_add_waiters`` / ``_publish_waiters``: who is blocked, and on what.

Waiting is a notification, not a poll. A blocked ``add_many`` registers a
waiter for its product; a publish (or a remove) of that product hands the unit
straight into the waiter's cart, and wakes the waiter only once it has all it
asked for. A blocked ``publish`` registers on its producer; the add that frees
a slot publishes the waiting unit on the producer's behalf and wakes it. So a
thread is woken only when its call is complete, never to find that another
thread got there first.

A waiter's place survives its tries. An add that times out short of what
it asked for does not leave the line: it stays there, *lapsed*, for
``LAPSE_GRACE_S``, and a unit that comes in its turn goes on sale reserved
for it (on sale as any unit is until a consumer takes it; nobody else may
take it). When the same cart asks again for the same product within the
grace (the retry of a consumer loop, a round trip later), the new call takes
the lapsed one's place and its reserved units. When the cart does anything
else, or the grace passes, its reservations go to the next in line: the
market keeps its lapsed adds in the order their grace ends, and whoever
waits (the serving loop, a blocked thread) asks it to let the overdue ones
go (``next_lapse``, ``let_lapses_go``), so a waiter behind a place nobody
came back for waits no longer than the grace. So a
consumer that waits longer than one try is never overtaken by one that came
after it. Before, each try that timed out rejoined the line at its end, and
course case 07 took 12.0 to 13.5 s instead of 11.6 s about one run in two.
A lapsed add is not counted as waiting (books, waits): its caller is between
two calls.

Each waiting call is split in two, ``start_add`` / ``finish_add`` and
``start_publish`` / ``finish_publish``, around a ``wake`` callable that the
market calls once, with its lock held, when the wait is over. A thread passes
the release of a one-shot ``threading.Lock`` and blocks on it (``add_many``,
``publish``); the server's event loop passes a callback that queues the reply
(``mpmarket.net.loop``), so no thread waits at all.

Locking: one ``threading.Lock`` guards all the state above; critical sections
are a few dictionary operations and never block. A ``wake`` must not block
nor call back into the market (releasing a lock, appending to a deque). Lock
order: market lock, then whatever ``wake`` touches; the reverse never happens.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

from mpmarket.core.books import MarketBooks, MarketSnapshot, MarketWaits
from mpmarket.errors import (
    CartRevokedError,
    InvalidArgumentError,
    MarketClosedError,
    UnknownCartError,
    UnknownProducerError,
)
from mpmarket.products import Product

__all__ = ["HANDOFF", "LAPSE_GRACE_S", "AddWait", "Marketplace", "PublishWait", "check_queue_size"]

# How long an add that timed out keeps its place in line for the retry of
# the same cart (see "A waiter's place survives its tries" above). A retry
# comes one round trip later, well under a millisecond; a second leaves room
# for a loaded machine, and a consumer that never comes back (stopped, dead)
# holds the units reserved for it no longer than this.
LAPSE_GRACE_S = 1.0


# The shortest turn of a blocked thread that lets overdue lapsed places go
# (``_blocking``): short against the grace, long enough never to spin.
_LAPSE_CHECK_MIN_S = 0.001

Wake = Callable[[], None]

# The log level of the hand-over lines: above INFO, so that a log kept at
# "HANDOFF" (``--trace``) has them without a line per operation.
HANDOFF = 25
logging.addLevelName(HANDOFF, "HANDOFF")
# A log at HANDOFF but not INFO (``--trace``'s) gets its hand-overs when the
# market closes, kept in memory till then: a line written per hand-over took
# 10-90 us of the serving thread (2 shared cores, loaded), a tuple kept 0.3 us.
# At most this many (about 150 bytes each: 30 MB; a minute of stress's churn);
# the rest are counted in one line. A log at INFO has every operation written
# as it goes, hand-overs too.
MAX_KEPT_HANDOFFS = 200_000

_HANDED = "handed(%s, %d, %r) -> cart %d (%d of %d) at %d ns"

_T = TypeVar("_T")


class AddWait:
    """A blocked ``add_many``: filled by publishers, woken once full or closed.

    Opaque to callers: hand it back to ``finish_add``.
    """

    __slots__ = (
        "cart", "cart_id", "closed", "lapsed_until", "needed", "product", "quantity",
        "received", "revoked", "taken", "timeout", "wake",
    )  # fmt: skip

    def __init__(
        self,
        cart_id: int,
        cart: dict[Product, list[int]],
        product: Product,
        quantity: int,
        taken: int,
        timeout: float,
        wake: Wake,
    ) -> None:
        self.cart_id = cart_id
        self.cart = cart
        self.product = product
        self.quantity = quantity
        self.taken = taken  # units taken off the shelf at the start
        self.timeout = timeout
        self.needed = quantity - taken
        self.received = 0  # units handed over by publishers and removers since
        self.revoked = False
        self.closed = False
        self.wake = wake
        # Set when the call timed out short: its place is kept for the cart's
        # retry until then (monotonic), and ``received`` counts the units
        # reserved for it on sale.
        self.lapsed_until: float | None = None


def _nothing() -> None:
    """The wake of a lapsed add: its caller has gone back already."""


class PublishWait:
    """A blocked ``publish``: done by whoever frees a slot of its producer.

    Opaque to callers: hand it back to ``finish_publish``.
    """

    __slots__ = ("closed", "done", "producer_id", "product", "timeout", "wake")

    def __init__(self, producer_id: int, product: Product, timeout: float, wake: Wake) -> None:
        self.producer_id = producer_id
        self.product = product
        self.timeout = timeout
        self.done = False
        self.closed = False
        self.wake = wake


def _blocking(
    market: Marketplace,
    start: Callable[..., object],
    finish: Callable[[Any], object],
    timeout: float,
    *args: object,
) -> Any:
    """Run a split call on this thread: start it, block until woken or timed out, finish.

    The signal is a one-shot lock: acquired here once, released by the wake.
    While it waits, the thread lets overdue lapsed places go when they are due
    (``Marketplace.let_lapses_go``): there is no serving loop to do it.
    """
    if type(timeout) not in (int, float) or not timeout > 0:  # start() checks it
        return start(None, *args, timeout)
    signal = threading.Lock()
    signal.acquire()
    outcome = start(signal.release, *args, timeout)
    if not isinstance(outcome, (AddWait, PublishWait)):
        return outcome
    remaining = min(timeout, threading.TIMEOUT_MAX)
    while remaining > 0:
        lapse = market.next_lapse()
        wait = remaining
        if lapse is not None:  # at least a millisecond a turn: the loop always ends
            wait = min(remaining, max(lapse - time.monotonic(), _LAPSE_CHECK_MIN_S))
        if signal.acquire(timeout=wait):
            break
        remaining -= wait
        market.let_lapses_go()
    return finish(outcome)


def check_queue_size(value: object) -> int:
    """``queue_size_per_producer`` as every market takes it: a positive int."""
    if type(value) is not int or value < 1:
        raise InvalidArgumentError(f"queue_size_per_producer must be a positive int, got {value!r}")
    return value


def _check_count(name: str, value: object) -> int:
    if type(value) is int and value >= 0:  # not bool: True is not a count
        return value
    raise InvalidArgumentError(f"{name} must be a non-negative int, got {value!r}")


def _check_timeout(value: object) -> float:
    if (type(value) is int or type(value) is float) and value >= 0:  # refuses NaN too
        return value
    raise InvalidArgumentError(f"timeout must be a non-negative number, got {value!r}")


def _check_product(value: object) -> Product:
    if not isinstance(value, Product):
        raise InvalidArgumentError(f"product must be a Product, got {value!r}")
    try:  # a pickled product can carry fields of any type: a list would fail
        hash(value)  # in the middle of an operation, after the books changed
    except Exception:
        raise InvalidArgumentError(f"product must be hashable, got {value!r}") from None
    return value


class Marketplace:
    """Producers publish products, consumers put them in carts and order them.

    ``queue_size_per_producer`` caps how many units one producer may have on
    sale. Pass a ``logger`` to log every operation with its arguments and result,
    and (at ``HANDOFF``, between INFO and WARNING) each unit a publish, a remove
    or a cart given back hands straight into a waiting add's cart, with the
    ``time.monotonic_ns()`` of the hand-over: what ``--trace`` draws its arrows from
    (a log at HANDOFF but not INFO gets them when the market closes).
    """

    def __init__(
        self, queue_size_per_producer: int, *, logger: logging.Logger | None = None
    ) -> None:
        self.queue_size_per_producer = check_queue_size(queue_size_per_producer)
        self._log = logger
        keep = logger is not None and not logger.isEnabledFor(logging.INFO)
        self._handoffs: list[tuple[object, ...]] | None = (
            [] if keep and logger is not None and logger.isEnabledFor(HANDOFF) else None
        )
        self._handoffs_dropped = 0
        self._lock = threading.Lock()
        self._closed = False
        self._on_sale: dict[Product, deque[int]] = {}
        self._on_sale_per_producer: list[int] = []
        self._sold_per_producer: list[int] = []
        self._carts: list[dict[Product, list[int]]] = []
        self._cart_seen: list[float] = []  # monotonic time of each cart's last call
        self._cart_busy: list[int] = []  # calls of each cart waiting in the market
        self._revoked: set[int] = set()  # carts released for good (owner gone)
        self._add_waiters: dict[Product, deque[AddWait]] = {}
        # cart id -> product -> its add that timed out, keeping its place in line
        self._lapsed: dict[int, dict[Product, AddWait]] = {}
        # (end of grace, lapsed add), in that order: the grace is the same for all
        self._lapses: deque[tuple[float, AddWait]] = deque()
        self._reserved: dict[Product, int] = {}  # units on sale kept for lapsed adds
        self._publish_waiters: dict[int, deque[PublishWait]] = {}
        self._published = 0
        self._ordered = 0
        self._orders = 0

    # -- producers -----------------------------------------------------------

    def register_producer(self) -> int:
        """Register a producer and return its id: 0, 1, 2, ..."""
        with self._lock:
            self._check_open()
            producer_id = len(self._on_sale_per_producer)
            self._on_sale_per_producer.append(0)
            self._sold_per_producer.append(0)
        if self._log:
            self._log.info("register_producer() -> %d", producer_id)
        return producer_id

    def publish(self, producer_id: int, product: Product, timeout: float = 0.0) -> bool:
        """Put one unit of ``product`` on sale for ``producer_id``.

        Refused (False) while the producer has ``queue_size_per_producer`` units
        on sale; with a ``timeout`` it waits that long for a slot and is
        published the moment one frees.
        """
        return _blocking(
            self, self.start_publish, self.finish_publish, timeout, producer_id, product
        )

    def start_publish(
        self, wake: Wake | None, producer_id: int, product: Product, timeout: float = 0.0
    ) -> bool | PublishWait:
        """``publish`` without blocking: its result, or a wait for ``finish_publish``.

        A wait is returned only when the producer is full and ``timeout`` > 0;
        ``wake`` is called once, with the market's lock held, when a slot has
        published the unit or the market closed. Call ``finish_publish`` then,
        or when ``timeout`` has passed, whichever comes first.
        """
        _check_product(product)
        _check_timeout(timeout)
        with self._lock:
            self._check_open()
            self._check_producer(producer_id)
            if self._on_sale_per_producer[producer_id] < self.queue_size_per_producer:
                self._published += 1
                self._put_on_sale(producer_id, product)
                return self._logged("publish", True, producer_id, product, timeout)
            if timeout <= 0 or wake is None:
                return self._logged("publish", False, producer_id, product, timeout)
            wait = PublishWait(producer_id, product, timeout, wake)
            self._publish_waiters.setdefault(producer_id, deque()).append(wait)
            return wait

    def finish_publish(self, wait: PublishWait) -> bool:
        """End a publish wait, woken or timed out: True if the unit went on sale."""
        with self._lock:
            if not wait.done and not wait.closed:  # close() cleared the queues
                queue = self._publish_waiters[wait.producer_id]
                if wait in queue:
                    queue.remove(wait)
            if wait.closed:
                raise MarketClosedError()
            done = wait.done
        return self._logged("publish", done, wait.producer_id, wait.product, wait.timeout)

    # -- consumers -----------------------------------------------------------

    def new_cart(self) -> int:
        """Hand out a new, empty cart id: 0, 1, 2, ... It stays valid for good."""
        with self._lock:
            self._check_open()
            cart_id = len(self._carts)
            self._carts.append({})
            self._cart_seen.append(time.monotonic())
            self._cart_busy.append(0)
        if self._log:
            self._log.info("new_cart() -> %d", cart_id)
        return cart_id

    def add_to_cart(self, cart_id: int, product: Product, timeout: float = 0.0) -> bool:
        """Move the first unit on sale equal to ``product`` into the cart.

        False when none is on sale; with a ``timeout`` it waits that long and
        is served the moment a matching unit goes on sale.
        """
        return self.add_many(cart_id, product, 1, timeout) == 1

    def add_many(self, cart_id: int, product: Product, quantity: int, timeout: float = 0.0) -> int:
        """Add up to ``quantity`` units of ``product`` to the cart; return how many.

        Units on sale are taken at once, first published first. If that is not
        enough and ``timeout`` > 0, the call waits up to ``timeout`` seconds and
        units published meanwhile go straight into the cart. One call instead
        of ``quantity`` round trips through a proxy.
        """
        return _blocking(self, self.start_add, self.finish_add, timeout, cart_id, product, quantity)

    def start_add(
        self,
        wake: Wake | None,
        cart_id: int,
        product: Product,
        quantity: int,
        timeout: float = 0.0,
    ) -> int | AddWait:
        """``add_many`` without blocking: its result, or a wait for ``finish_add``.

        A wait is returned only when too few units are on sale and ``timeout``
        > 0; ``wake`` is called once, with the market's lock held, when the
        cart has all it asked for, the market closed or the cart was revoked.
        Call ``finish_add`` then, or when ``timeout`` has passed, whichever
        comes first.
        """
        _check_product(product)
        _check_count("quantity", quantity)
        _check_timeout(timeout)
        with self._lock:
            self._check_open()
            cart = self._cart(cart_id)
            self._settle_lapsed(cart_id, but=product)  # the cart moved on from those
            self._let_due_lapses_go()
            lapsed = self._lapsed.get(cart_id, {}).pop(product, None)
            if lapsed is not None:  # a retry: its place and its reserved units
                self._unreserve(lapsed)
            taken = self._take_from_sale(cart, product, quantity)
            if taken == quantity or timeout <= 0 or wake is None:
                if lapsed is not None:
                    self._leave_line(lapsed)
                    self._dispatch(product)  # reserved beyond what it asked: the next's
                return self._logged("add", taken, cart_id, product, quantity, timeout)
            if lapsed is not None and self._in_line(lapsed):
                wait = lapsed  # its place in line, taken up again
                wait.quantity, wait.taken, wait.needed = quantity, taken, quantity - taken
                wait.received, wait.timeout, wait.wake = 0, timeout, wake
                wait.lapsed_until = None
            else:
                wait = AddWait(cart_id, cart, product, quantity, taken, timeout, wake)
                self._add_waiters.setdefault(product, deque()).append(wait)
            self._cart_busy[cart_id] += 1
            return wait

    def finish_add(self, wait: AddWait) -> int:
        """End an add wait, woken or timed out: how many units the cart got in all."""
        cart_id = wait.cart_id
        with self._lock:
            self._cart_busy[cart_id] -= 1
            self._cart_seen[cart_id] = time.monotonic()
            if wait.closed:
                raise MarketClosedError()
            if wait.revoked:
                raise CartRevokedError(cart_id)
            got = wait.taken + wait.received
            logged = (wait.product, wait.quantity, wait.timeout)  # the wait may be taken up again
            if wait.received < wait.needed and self._in_line(wait):
                # Timed out short: the place is kept for the cart's retry.
                wait.needed -= wait.received
                wait.received = 0
                wait.wake = _nothing
                wait.lapsed_until = until = time.monotonic() + LAPSE_GRACE_S
                self._lapsed.setdefault(cart_id, {})[wait.product] = wait
                self._lapses.append((until, wait))
        return self._logged("add", got, cart_id, *logged)

    def remove_from_cart(self, cart_id: int, product: Product) -> bool:
        """Put one unit of ``product`` back on sale; False if the cart has none."""
        return self.remove_many(cart_id, product, 1) == 1

    def remove_many(self, cart_id: int, product: Product, quantity: int) -> int:
        """Put up to ``quantity`` units back on sale (at the end); return how many.

        Never blocks and never refuses a unit that is in the cart: it goes back
        into its producer's count even above the cap.
        """
        _check_product(product)
        _check_count("quantity", quantity)
        with self._lock:
            self._check_open()
            cart = self._cart(cart_id)
            self._settle_lapsed(cart_id)
            units = cart.get(product)
            removed = 0
            while units and removed < quantity:
                self._put_on_sale(units.pop(), product, ("remove", cart_id))
                removed += 1
            if units == []:
                del cart[product]
        return self._logged("remove", removed, cart_id, product, quantity)

    def place_order(self, cart_id: int) -> list[Product]:
        """Empty the cart and return its products; the cart id stays valid."""
        with self._lock:
            self._check_open()
            cart = self._cart(cart_id)
            self._settle_lapsed(cart_id)
            products = [product for product, units in cart.items() for _ in units]
            for units in cart.values():
                for producer_id in units:
                    self._sold_per_producer[producer_id] += 1
            cart.clear()
            self._ordered += len(products)
            self._orders += 1
        if self._log:
            self._log.info("place_order(%d) -> %r", cart_id, products)
        return products

    # -- lifecycle and books -------------------------------------------------

    def close(self) -> None:
        """Close the market: waiters and later calls get ``MarketClosedError``.

        Safe to call twice. Used by the runner when the last consumer is done,
        so that producers blocked in ``publish`` stop at once.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for add_queue in self._add_waiters.values():
                for add_wait in add_queue:
                    add_wait.closed = True
                    add_wait.wake()
            for publish_queue in self._publish_waiters.values():
                for publish_wait in publish_queue:
                    publish_wait.closed = True
                    publish_wait.wake()
            self._add_waiters.clear()
            self._lapsed.clear()
            self._lapses.clear()
            self._reserved.clear()
            self._publish_waiters.clear()
        if self._log:
            self._log.info("close()")
            self._write_kept_handoffs()

    @property
    def closed(self) -> bool:
        return self._closed

    def books(self) -> MarketBooks:
        """A consistent snapshot of the counts, for reports and invariant checks."""
        with self._lock:
            return MarketBooks(
                queue_size_per_producer=self.queue_size_per_producer,
                producers=len(self._on_sale_per_producer),
                carts=len(self._carts),
                published=self._published,
                on_sale=sum(len(units) for units in self._on_sale.values()),
                in_carts=sum(len(units) for cart in self._carts for units in cart.values()),
                ordered=self._ordered,
                orders=self._orders,
                on_sale_per_producer=tuple(self._on_sale_per_producer),
                sold_per_producer=tuple(self._sold_per_producer),
                waiting_consumers=self._waiting_consumers(),
                waiting_producers=sum(len(q) for q in self._publish_waiters.values()),
                closed=self._closed,
            )

    def snapshot(self) -> MarketSnapshot:
        """What is on sale per producer and product, and what each cart holds.

        For ``mpmarket status``: a scan of the market under its lock, so one
        consistent picture; not for the hot path.
        """
        with self._lock:
            held: dict[tuple[int, Product], int] = {}
            for product, queue in self._on_sale.items():
                for producer_id in queue:
                    held[producer_id, product] = held.get((producer_id, product), 0) + 1
            return MarketSnapshot(
                queue_size_per_producer=self.queue_size_per_producer,
                producers=len(self._on_sale_per_producer),
                published=self._published,
                on_sale=tuple(
                    (producer_id, product, units)
                    for (producer_id, product), units in sorted(
                        held.items(), key=lambda item: item[0][0]
                    )
                ),
                carts=tuple(sum(len(units) for units in cart.values()) for cart in self._carts),
                orders=self._orders,
                ordered=self._ordered,
                waiting_consumers=self._waiting_consumers(),
                waiting_producers=sum(len(q) for q in self._publish_waiters.values()),
                closed=self._closed,
            )

    # -- faults: carts of vanished owners, audits, who waits -----------------

    def release_cart(self, cart_id: int) -> int:
        """Put every unit of a cart back on sale and revoke the cart for good.

        For a consumer that died: its products must not be lost. A call of the
        old owner still waiting in the market, or made later (a process that
        was only frozen), gets ``CartRevokedError``: a unit is never sold twice.
        Returns how many units went back on sale; 0 if already revoked.
        """
        with self._lock:
            if type(cart_id) is not int or not 0 <= cart_id < len(self._carts):
                raise UnknownCartError(cart_id)
            released = self._release(cart_id)
        if self._log:
            self._log.warning("release_cart(%d) -> %d", cart_id, released)
        return released

    def expire_idle_carts(self, idle_s: float) -> list[int]:
        """Release the carts that hold units and saw no call for ``idle_s`` seconds.

        The lease of remote consumers: a live consumer is always in a call or
        between two calls microseconds apart, so a cart that holds units and
        sees no call for long belongs to a consumer that vanished. Empty carts
        are left alone: nothing is lost, and a slow starter keeps its cart.
        """
        _check_timeout(idle_s)
        with self._lock:
            horizon = time.monotonic() - idle_s
            expired = [
                cart_id
                for cart_id, cart in enumerate(self._carts)
                if cart
                and not self._cart_busy[cart_id]
                and self._cart_seen[cart_id] < horizon
                and cart_id not in self._revoked
            ]
            for cart_id in expired:
                self._release(cart_id)
        if self._log and expired:
            self._log.warning("expire_idle_carts(%r) -> %r", idle_s, expired)
        return expired

    def audit(self) -> list[str]:
        """Recount everything from scratch; return the invariants that fail.

        Empty when the books are right: every unit published is on sale, in
        one cart or ordered; each producer's count equals its units on sale;
        nobody waits for a product that is on sale.
        """
        with self._lock:
            problems = []
            counted = [0] * len(self._on_sale_per_producer)
            for queue in self._on_sale.values():
                for producer_id in queue:
                    counted[producer_id] += 1
            for producer_id, (kept, real) in enumerate(
                zip(self._on_sale_per_producer, counted, strict=True)
            ):
                if kept != real:
                    problems.append(f"producer {producer_id} counts {kept} on sale, holds {real}")
            on_sale = sum(counted)
            in_carts = sum(len(units) for cart in self._carts for units in cart.values())
            if self._published != on_sale + in_carts + self._ordered:
                problems.append(
                    f"published {self._published} != on sale {on_sale} + in carts "
                    f"{in_carts} + ordered {self._ordered}"
                )
            for product, waiters in self._add_waiters.items():
                free = len(self._on_sale.get(product, ())) - self._reserved.get(product, 0)
                if free > 0 and any(w.lapsed_until is None for w in waiters):
                    problems.append(f"consumers wait for {product!r} while it is on sale")
            reserved: dict[Product, int] = {}
            for places in self._lapsed.values():
                for product, lapsed in places.items():
                    reserved[product] = reserved.get(product, 0) + lapsed.received
            for product, count in self._reserved.items():
                if count != reserved.get(product, 0) or count > len(self._on_sale.get(product, ())):
                    problems.append(
                        f"{count} units of {product!r} reserved, lapsed adds hold "
                        f"{reserved.get(product, 0)}"
                    )
            for cart_id in self._revoked:
                if self._carts[cart_id]:
                    problems.append(f"revoked cart {cart_id} still holds units")
            return problems

    def waits(self) -> MarketWaits:
        """Who waits for what, and what fills each producer's slots."""
        with self._lock:
            consumers = tuple(
                (waiter.cart_id, product, waiter.needed - waiter.received)
                for product, queue in self._add_waiters.items()
                for waiter in queue
                if waiter.lapsed_until is None
            )
            producers = tuple(
                (producer_id, waiter.product)
                for producer_id, queue in self._publish_waiters.items()
                for waiter in queue
            )
            slots: dict[int, dict[Product, int]] = {}
            for product, queue in self._on_sale.items():
                for producer_id in queue:
                    held = slots.setdefault(producer_id, {})
                    held[product] = held.get(product, 0) + 1
            return MarketWaits(
                self.queue_size_per_producer,
                consumers,
                producers,
                {producer_id: tuple(held.items()) for producer_id, held in slots.items()},
            )

    def next_lapse(self) -> float | None:
        """When a place kept for a lapsed add is next due to go (monotonic), if any.

        Whoever waits on the market's behalf (the serving loop, a blocked
        thread) calls ``let_lapses_go`` by then, so units kept for a cart
        that did not come back reach the next in line within the grace.
        """
        if not self._lapses:  # the common case, without the lock: nobody lapsed
            return None
        with self._lock:
            return self._next_lapse()

    def let_lapses_go(self) -> None:
        """Give up the places (and kept units) of lapsed adds whose grace passed."""
        with self._lock:
            self._let_due_lapses_go()

    # -- internals (call with self._lock held) -------------------------------

    def _release(self, cart_id: int) -> int:
        """Revoke a cart: wake its waiting calls, then put its units on sale."""
        if cart_id in self._revoked:
            return 0
        self._revoked.add(cart_id)
        settled = list(self._lapsed.pop(cart_id, {}).values())
        for lapsed in settled:
            self._unreserve(lapsed)  # its place goes below, its units to the next in line
        for queue in self._add_waiters.values():
            for waiter in [w for w in queue if w.cart_id == cart_id]:
                queue.remove(waiter)
                waiter.revoked = True
                waiter.wake()
        cart = self._carts[cart_id]
        released = 0
        for product, units in cart.items():
            for producer_id in units:
                self._put_on_sale(producer_id, product, ("release", cart_id))
                released += 1
        cart.clear()
        for lapsed in settled:
            self._dispatch(lapsed.product)
        return released

    def _put_on_sale(
        self, producer_id: int, product: Product, by: tuple[str, int] | None = None
    ) -> None:
        """A unit goes on sale, or straight into the cart of the first waiter.

        ``by``: who puts it there, for the log (default: its producer's publish).
        """
        if self._lapses:
            self._let_due_lapses_go()
        waiters = self._add_waiters.get(product)
        if waiters and waiters[0].lapsed_until is not None:
            # Its caller is between two tries: the unit waits on sale, for it.
            self._reserve(waiters, producer_id, product)
            return
        if waiters:
            waiter = waiters[0]
            waiter.cart.setdefault(product, []).append(producer_id)
            waiter.received += 1
            if self._log:
                self._log_handoff(by or ("publish", producer_id), product, waiter)
            if waiter.received == waiter.needed:
                waiters.popleft()
                waiter.wake()
            return
        queue = self._on_sale.get(product)
        if queue is None:
            queue = self._on_sale[product] = deque()
        queue.append(producer_id)
        self._on_sale_per_producer[producer_id] += 1

    def _waiting_consumers(self) -> int:
        """Adds in line, but for lapsed ones (their callers are between two calls)."""
        return sum(w.lapsed_until is None for q in self._add_waiters.values() for w in q)

    def _in_line(self, wait: AddWait) -> bool:
        queue = self._add_waiters.get(wait.product)
        return queue is not None and wait in queue

    def _leave_line(self, wait: AddWait) -> None:
        queue = self._add_waiters.get(wait.product)
        if queue is not None and wait in queue:
            queue.remove(wait)

    def _reserve(self, waiters: deque[AddWait], producer_id: int, product: Product) -> None:
        """A unit goes on sale kept for the lapsed add first in line."""
        lapsed = waiters[0]
        queue = self._on_sale.get(product)
        if queue is None:
            queue = self._on_sale[product] = deque()
        queue.append(producer_id)
        self._on_sale_per_producer[producer_id] += 1
        self._reserved[product] = self._reserved.get(product, 0) + 1
        lapsed.received += 1
        if lapsed.received == lapsed.needed:
            waiters.popleft()  # all it wants waits for it: its place is no longer needed

    def _unreserve(self, lapsed: AddWait) -> None:
        """The units kept for a lapsed add are anybody's again (call ``_dispatch``)."""
        if lapsed.received:
            self._reserved[lapsed.product] -= lapsed.received
            lapsed.received = 0

    def _settle_lapsed(self, cart_id: int, but: Product | None = None) -> None:
        """The cart moved on: its lapsed adds leave the line, their units go to the next."""
        places = self._lapsed.get(cart_id)
        if not places:
            return
        for product in [product for product in places if product != but]:
            self._settle(places.pop(product))

    def _let_due_lapses_go(self) -> None:
        """Lapsed adds whose grace has passed: nobody came back for them.

        Entries of adds taken up again or settled since are stale and dropped.
        """
        lapses = self._lapses
        if not lapses or lapses[0][0] > time.monotonic():
            return
        now = time.monotonic()
        while lapses and lapses[0][0] <= now:
            until, lapsed = lapses.popleft()
            if lapsed.lapsed_until != until:
                continue  # taken up again (or lapsed again, with a later entry)
            places = self._lapsed.get(lapsed.cart_id)
            if places is None or places.get(lapsed.product) is not lapsed:
                continue  # settled already
            del places[lapsed.product]
            self._settle(lapsed)

    def _next_lapse(self) -> float | None:
        """When the first live lapsed add's grace ends (monotonic), if any."""
        lapses = self._lapses
        while lapses:
            until, lapsed = lapses[0]
            places = self._lapsed.get(lapsed.cart_id)
            if (
                lapsed.lapsed_until == until
                and places is not None
                and places.get(lapsed.product) is lapsed
            ):
                return until
            lapses.popleft()
        return None

    def _settle(self, lapsed: AddWait) -> None:
        self._leave_line(lapsed)
        self._unreserve(lapsed)
        self._dispatch(lapsed.product)

    def _dispatch(self, product: Product) -> None:
        """Units on sale and not reserved go to the line, in its order."""
        waiters = self._add_waiters.get(product)
        queue = self._on_sale.get(product)
        while waiters and queue and len(queue) > self._reserved.get(product, 0):
            if waiters[0].lapsed_until is not None:
                self._reserved[product] = self._reserved.get(product, 0) + 1
                waiters[0].received += 1
                if waiters[0].received == waiters[0].needed:
                    waiters.popleft()
                continue
            waiter = waiters[0]
            producer_id = queue.popleft()
            self._on_sale_per_producer[producer_id] -= 1
            waiter.cart.setdefault(product, []).append(producer_id)
            waiter.received += 1
            if waiter.received == waiter.needed:
                waiters.popleft()
                waiter.wake()
            self._slot_freed(producer_id)

    def _take_from_sale(
        self, cart: dict[Product, list[int]], product: Product, quantity: int
    ) -> int:
        """Move up to ``quantity`` units on sale into ``cart``, oldest first.

        Units reserved for lapsed adds are left: they are somebody else's.
        """
        queue = self._on_sale.get(product)
        taken = 0
        while queue and taken < quantity and len(queue) > self._reserved.get(product, 0):
            producer_id = queue.popleft()
            cart.setdefault(product, []).append(producer_id)
            self._on_sale_per_producer[producer_id] -= 1
            taken += 1
            self._slot_freed(producer_id)
        return taken

    def _slot_freed(self, producer_id: int) -> None:
        """Publish the units of producer calls waiting, while a slot is free.

        The producer may still be at or above the cap (removes go back above
        it); and a unit handed straight to a waiting cart leaves the slot free.
        """
        waiters = self._publish_waiters.get(producer_id)
        while waiters and self._on_sale_per_producer[producer_id] < self.queue_size_per_producer:
            waiter = waiters.popleft()
            self._published += 1
            self._put_on_sale(producer_id, waiter.product)
            waiter.done = True
            waiter.wake()

    def _cart(self, cart_id: int) -> dict[Product, list[int]]:
        if type(cart_id) is not int:  # bool too: True is not cart 1
            raise InvalidArgumentError(f"cart id must be an int, got {cart_id!r}")
        if not 0 <= cart_id < len(self._carts):
            raise UnknownCartError(cart_id)
        if cart_id in self._revoked:
            raise CartRevokedError(cart_id)
        self._cart_seen[cart_id] = time.monotonic()
        return self._carts[cart_id]

    def _check_producer(self, producer_id: int) -> None:
        if type(producer_id) is not int:  # bool too: True is not producer 1
            raise InvalidArgumentError(f"producer id must be an int, got {producer_id!r}")
        if not 0 <= producer_id < len(self._on_sale_per_producer):
            raise UnknownProducerError(producer_id)

    def _check_open(self) -> None:
        if self._closed:
            raise MarketClosedError()

    def _log_handoff(self, by: tuple[str, int], product: Product, waiter: AddWait) -> None:
        """``handed(publish, 3, Tea(...)) -> cart 5 (1 of 2) at 812345678901 ns``."""
        assert self._log is not None
        line = (*by, product, waiter.cart_id, waiter.received, waiter.needed, time.monotonic_ns())
        if self._handoffs is None:
            self._log.log(HANDOFF, _HANDED, *line)
        elif len(self._handoffs) < MAX_KEPT_HANDOFFS:
            self._handoffs.append(line)
        else:
            self._handoffs_dropped += 1

    def _write_kept_handoffs(self) -> None:
        """The hand-overs kept for a log at HANDOFF, written once the market is closed."""
        assert self._log is not None
        kept, self._handoffs = self._handoffs, None
        for line in kept or ():
            self._log.log(HANDOFF, _HANDED, *line)
        if self._handoffs_dropped:
            self._log.warning("hand-overs not kept: %d", self._handoffs_dropped)

    def _logged(self, operation: str, result: _T, *args: object) -> _T:
        """Return ``result``, logging the operation first when a log is set."""
        if self._log:
            self._log.info("%s%r -> %r", operation, args, result)
        return result
