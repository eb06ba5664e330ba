"""The Marketplace: the in-process, thread-safe state machine of the market.

It knows nothing of processes. The server hosts one instance and serves every
connection on its own thread, so every public method takes the market's lock;
an agent running in a thread uses the very same object directly.

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

Locking: one ``threading.Lock`` guards all the state above; critical sections
are a few dictionary operations and never block. Each waiter owns a
``threading.Lock`` used as a one-shot signal: the waker releases it while
holding the market lock (a release never blocks), the waiter acquires it
without holding the market lock. Lock order: market lock, then a waiter's
signal; the reverse never happens.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from mpmarket.errors import (
    InvalidArgumentError,
    MarketClosedError,
    UnknownCartError,
    UnknownProducerError,
)
from mpmarket.products import Product

__all__ = ["Market", "MarketBooks", "Marketplace"]


class Market(Protocol):
    """What agents need of a market: a Marketplace and its proxy both fit."""

    def register_producer(self) -> int: ...
    def publish(self, producer_id: int, product: Product, timeout: float = 0.0) -> bool: ...
    def new_cart(self) -> int: ...
    def add_many(
        self, cart_id: int, product: Product, quantity: int, timeout: float = 0.0
    ) -> int: ...
    def remove_many(self, cart_id: int, product: Product, quantity: int) -> int: ...
    def place_order(self, cart_id: int) -> list[Product]: ...


@dataclass(frozen=True)
class MarketBooks:
    """A consistent snapshot of the market's books, taken under its lock.

    Conservation holds when ``published == on_sale + in_carts + ordered``.
    """

    queue_size_per_producer: int
    producers: int
    carts: int
    published: int
    on_sale: int
    in_carts: int
    ordered: int
    orders: int
    on_sale_per_producer: tuple[int, ...]
    waiting_consumers: int
    waiting_producers: int
    closed: bool

    @property
    def balanced(self) -> bool:
        """True when every unit published is on sale, in a cart, or ordered."""
        return self.published == self.on_sale + self.in_carts + self.ordered


class _AddWaiter:
    """A blocked ``add_many``: filled by publishers, woken once full or closed."""

    __slots__ = ("cart", "closed", "needed", "received", "signal")

    def __init__(self, cart: dict[Product, list[int]], needed: int) -> None:
        self.cart = cart
        self.needed = needed
        self.received = 0
        self.closed = False
        self.signal = threading.Lock()
        self.signal.acquire()


class _PublishWaiter:
    """A blocked ``publish``: done by whoever frees a slot of its producer."""

    __slots__ = ("closed", "done", "product", "signal")

    def __init__(self, product: Product) -> None:
        self.product = product
        self.done = False
        self.closed = False
        self.signal = threading.Lock()
        self.signal.acquire()


def _check_count(name: str, value: object) -> int:
    if type(value) is not int or value < 0:
        raise InvalidArgumentError(f"{name} must be a non-negative int, got {value!r}")
    return value


def _check_timeout(value: object) -> float:
    if type(value) not in (int, float) or not value >= 0:  # also refuses NaN
        raise InvalidArgumentError(f"timeout must be a non-negative number, got {value!r}")
    return value  # type: ignore[return-value]


def _check_product(value: object) -> Product:
    if not isinstance(value, Product):
        raise InvalidArgumentError(f"product must be a Product, got {value!r}")
    return value


class Marketplace:
    """Producers publish products, consumers put them in carts and order them.

    ``queue_size_per_producer`` caps how many units one producer may have on
    sale. Pass a ``logger`` to log every operation with its arguments and result.
    """

    def __init__(
        self, queue_size_per_producer: int, *, logger: logging.Logger | None = None
    ) -> None:
        if type(queue_size_per_producer) is not int or queue_size_per_producer < 1:
            raise InvalidArgumentError(
                f"queue_size_per_producer must be a positive int, got {queue_size_per_producer!r}"
            )
        self.queue_size_per_producer = queue_size_per_producer
        self._log = logger
        self._lock = threading.Lock()
        self._closed = False
        self._on_sale: dict[Product, deque[int]] = {}
        self._on_sale_per_producer: list[int] = []
        self._carts: list[dict[Product, list[int]]] = []
        self._add_waiters: dict[Product, deque[_AddWaiter]] = {}
        self._publish_waiters: dict[int, deque[_PublishWaiter]] = {}
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
        if self._log:
            self._log.info("register_producer() -> %d", producer_id)
        return producer_id

    def publish(self, producer_id: int, product: Product, timeout: float = 0.0) -> bool:
        """Put one unit of ``product`` on sale for ``producer_id``.

        Refused (False) while the producer has ``queue_size_per_producer`` units
        on sale; with a ``timeout`` it waits that long for a slot and is
        published the moment one frees.
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
            if timeout <= 0:
                return self._logged("publish", False, producer_id, product, timeout)
            waiter = _PublishWaiter(product)
            self._publish_waiters.setdefault(producer_id, deque()).append(waiter)
        waiter.signal.acquire(timeout=min(timeout, threading.TIMEOUT_MAX))
        with self._lock:
            if not waiter.done and not waiter.closed:  # close() cleared the queues
                queue = self._publish_waiters[producer_id]
                if waiter in queue:
                    queue.remove(waiter)
            if waiter.closed:
                raise MarketClosedError()
            return self._logged("publish", waiter.done, producer_id, product, timeout)

    # -- consumers -----------------------------------------------------------

    def new_cart(self) -> int:
        """Hand out a new, empty cart id: 0, 1, 2, ... It stays valid for good."""
        with self._lock:
            self._check_open()
            cart_id = len(self._carts)
            self._carts.append({})
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
        _check_product(product)
        _check_count("quantity", quantity)
        _check_timeout(timeout)
        with self._lock:
            self._check_open()
            cart = self._cart(cart_id)
            taken = self._take_from_sale(cart, product, quantity)
            if taken == quantity or timeout <= 0:
                return self._logged("add", taken, cart_id, product, quantity, timeout)
            waiter = _AddWaiter(cart, quantity - taken)
            self._add_waiters.setdefault(product, deque()).append(waiter)
        waiter.signal.acquire(timeout=min(timeout, threading.TIMEOUT_MAX))
        with self._lock:
            if waiter.received < waiter.needed and not waiter.closed:
                queue = self._add_waiters[product]
                if waiter in queue:
                    queue.remove(waiter)
            if waiter.closed:
                raise MarketClosedError()
            got = taken + waiter.received
            return self._logged("add", got, cart_id, product, quantity, timeout)

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
            units = cart.get(product)
            removed = 0
            while units and removed < quantity:
                self._put_on_sale(units.pop(), product)
                removed += 1
            if units == []:
                del cart[product]
        return self._logged("remove", removed, cart_id, product, quantity)

    def place_order(self, cart_id: int) -> list[Product]:
        """Empty the cart and return its products; the cart id stays valid."""
        with self._lock:
            self._check_open()
            cart = self._cart(cart_id)
            products = [product for product, units in cart.items() for _ in units]
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
                for waiter in add_queue:
                    waiter.closed = True
                    waiter.signal.release()
            for publish_queue in self._publish_waiters.values():
                for waiter in publish_queue:
                    waiter.closed = True
                    waiter.signal.release()
            self._add_waiters.clear()
            self._publish_waiters.clear()
        if self._log:
            self._log.info("close()")

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
                waiting_consumers=sum(len(q) for q in self._add_waiters.values()),
                waiting_producers=sum(len(q) for q in self._publish_waiters.values()),
                closed=self._closed,
            )

    # -- internals (call with self._lock held) -------------------------------

    def _put_on_sale(self, producer_id: int, product: Product) -> None:
        """A unit goes on sale, or straight into the cart of the first waiter."""
        waiters = self._add_waiters.get(product)
        if waiters:
            waiter = waiters[0]
            waiter.cart.setdefault(product, []).append(producer_id)
            waiter.received += 1
            if waiter.received == waiter.needed:
                waiters.popleft()
                waiter.signal.release()
            return
        queue = self._on_sale.get(product)
        if queue is None:
            queue = self._on_sale[product] = deque()
        queue.append(producer_id)
        self._on_sale_per_producer[producer_id] += 1

    def _take_from_sale(
        self, cart: dict[Product, list[int]], product: Product, quantity: int
    ) -> int:
        """Move up to ``quantity`` units on sale into ``cart``, oldest first."""
        queue = self._on_sale.get(product)
        taken = 0
        while queue and taken < quantity:
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
            waiter.signal.release()

    def _cart(self, cart_id: int) -> dict[Product, list[int]]:
        if type(cart_id) is not int:  # bool too: True is not cart 1
            raise InvalidArgumentError(f"cart id must be an int, got {cart_id!r}")
        if not 0 <= cart_id < len(self._carts):
            raise UnknownCartError(cart_id)
        return self._carts[cart_id]

    def _check_producer(self, producer_id: int) -> None:
        if type(producer_id) is not int:  # bool too: True is not producer 1
            raise InvalidArgumentError(f"producer id must be an int, got {producer_id!r}")
        if not 0 <= producer_id < len(self._on_sale_per_producer):
            raise UnknownProducerError(producer_id)

    def _check_open(self) -> None:
        if self._closed:
            raise MarketClosedError()

    def _logged(self, operation: str, result, *args):  # type: ignore[no-untyped-def]
        """Return ``result``, logging the operation first when a log is set."""
        if self._log:
            self._log.info("%s%r -> %r", operation, args, result)
        return result
