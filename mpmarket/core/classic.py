"""The classic market: the course's own design, kept as the reference to compare with.

It is the Marketplace the course describes, on purpose without mpmarket's
improvements, so that its runs and benchmarks show what they are measured
against (``mpmarket run --market classic``, hosted by a stock manager server
in ``mpmarket.net.classic``):

- a **list** of ``(product, producer id)`` pairs on sale, in the order they
  were published (a unit put back goes at the end);
- a **dict of free slots** per producer: ``queue_size_per_producer`` at
  registration, one less per unit of its on sale;
- a **dict of carts**, each a list of ``(product, producer id)`` pairs;
- **five locks**: registration, carts, the list, the free slots, printing;
- ``add_to_cart`` takes the **first matching** product in the list: a linear
  scan, as the course does;
- every method **tries once and never waits**: ``publish`` returns False when
  the producer has no free slot, ``add_to_cart`` when nothing matches. The
  waiting is the agents' (``ClassicAgent``): a refused call sleeps the
  republish or retry wait and tries again, in the agent's own thread, as the
  course's producer and consumer threads do.

``ClassicAgent`` is what the agent loops (``mpmarket.core.agents``) call: the
``Market`` protocol over the course's one-try methods, either of a
``ClassicMarket`` in this process (threads, the course's own shape) or of a
proxy to one served (processes; the sleeps are then client-side, and every
try is a round trip, as the course's code run on a manager would be).

Beyond the course, for runs: ``close()`` (then every call raises
``MarketClosedError``, so sleeping producers end at their next try),
``books()``, ``audit()``, ``waits()`` and ``release_cart()`` (a dead
consumer's units go back on sale). The course keeps no record of who waits:
here the last refusal of each cart and producer is noted (cleared by its next
success), so that ``books()`` counts the agents asleep between tries and a
stall can be explained.

Locking: one order, registration < carts < list < free slots < printing,
each taken inside the ones before it. A unit moves between the list and a
cart (add, remove, release) or onto the list (publish) under the list lock,
the free slots changing under theirs inside it; a cart's units leave for an
order under the carts lock. ``books()`` takes the first four, so it sees every
unit in exactly one place. The printing lock serialises what the market
writes: its operation log (the course's consumers print their orders under
it; here the runner prints them, from the agents' pipes).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol, TypeVar

from mpmarket.core.books import MarketBooks, MarketWaits
from mpmarket.core.market import check_queue_size
from mpmarket.core.workload import ConsumerSpec, ProducerSpec
from mpmarket.errors import (
    CartRevokedError,
    MarketClosedError,
    UnknownCartError,
    UnknownProducerError,
)
from mpmarket.products import Product

__all__ = ["CLASSIC_OPERATIONS", "ClassicAgent", "ClassicMarket", "CourseMarket", "poll"]

# The methods of a ClassicMarket a client may call through a proxy: the
# course's six, and what a run asks of its market.
CLASSIC_OPERATIONS = (
    "register_producer",
    "publish",
    "new_cart",
    "add_to_cart",
    "remove_from_cart",
    "place_order",
    "close",
    "books",
    "audit",
    "waits",
    "release_cart",
)

_T = TypeVar("_T")

Item = tuple[Product, int]  # a unit: the product and the id of its producer


class ClassicMarket:
    """The course's Marketplace: a list, a dict of free slots, a dict of carts, five locks.

    Every method tries once: see the module docstring. Pass a ``logger`` to
    log every operation with its arguments and result, as ``Marketplace`` does.
    """

    def __init__(
        self, queue_size_per_producer: int, *, logger: logging.Logger | None = None
    ) -> None:
        self.queue_size_per_producer = check_queue_size(queue_size_per_producer)
        self._log = logger
        self.register_lock = threading.Lock()
        self.carts_lock = threading.Lock()
        self.list_lock = threading.Lock()
        self.free_lock = threading.Lock()
        self.print_lock = threading.Lock()
        # Under the registration lock (ids) and the free-slot lock (slots).
        self.free_slots: dict[int, int] = {}
        # Under the list lock: the units on sale, and the carts' contents.
        self.products: list[Item] = []
        self.carts: dict[int, list[Item]] = {}  # the dict itself: under the carts lock
        self._published = 0  # list lock
        self._refused_adds: dict[int, Product] = {}  # list lock: cart -> product refused last
        self._refused_publishes: dict[int, Product] = {}  # free-slot lock
        self._revoked: set[int] = set()  # carts lock and list lock, both
        self._closed = False  # carts lock and list lock, both
        # Under the carts lock: what orders took.
        self._sold: dict[int, int] = {}
        self._ordered = 0
        self._orders = 0

    # -- the course's six ----------------------------------------------------

    def register_producer(self) -> int:
        """A new producer id: 0, 1, 2, ...; it starts with every slot free."""
        with self.register_lock:
            self._check_open()
            producer_id = len(self.free_slots)
            with self.free_lock:
                self.free_slots[producer_id] = self.queue_size_per_producer
        return self._logged("register_producer", producer_id)

    def publish(self, producer_id: int, product: Product) -> bool:
        """Put one unit on sale at the end of the list; False if the producer has no free slot."""
        with self.list_lock:
            self._check_open()
            with self.free_lock:
                free = self.free_slots.get(producer_id) if type(producer_id) is int else None
                if free is None:
                    raise UnknownProducerError(producer_id)
                if free <= 0:  # below zero after removes past the cap
                    self._refused_publishes[producer_id] = product
                    published = False
                else:
                    self.free_slots[producer_id] = free - 1
                    self._refused_publishes.pop(producer_id, None)
                    published = True
            if published:
                self.products.append((product, producer_id))
                self._published += 1
        return self._logged("publish", published, producer_id, product)

    def new_cart(self) -> int:
        """A new, empty cart: 0, 1, 2, ..."""
        with self.carts_lock:
            self._check_open()
            cart_id = len(self.carts)
            self.carts[cart_id] = []
        return self._logged("new_cart", cart_id)

    def add_to_cart(self, cart_id: int, product: Product) -> bool:
        """Move the first unit in the list equal to ``product`` into the cart; False if none."""
        with self.list_lock:
            self._check_open()
            cart = self._cart(cart_id)
            index = _first(self.products, product)
            if index < 0:
                self._refused_adds[cart_id] = product
                return self._logged("add_to_cart", False, cart_id, product)
            item = self.products.pop(index)
            cart.append(item)
            producer_id = item[1]
            self._refused_adds.pop(cart_id, None)
            with self.free_lock:
                self.free_slots[producer_id] += 1
        return self._logged("add_to_cart", True, cart_id, product)

    def remove_from_cart(self, cart_id: int, product: Product) -> bool:
        """Put the cart's first unit equal to ``product`` back at the end of the list.

        False if the cart has none. The producer's free slots go down even
        below zero: a unit in a cart is never refused.
        """
        with self.list_lock:
            self._check_open()
            cart = self._cart(cart_id)
            index = _first(cart, product)
            if index < 0:
                return self._logged("remove_from_cart", False, cart_id, product)
            item = cart.pop(index)
            self.products.append(item)
            producer_id = item[1]
            with self.free_lock:
                self.free_slots[producer_id] -= 1
        return self._logged("remove_from_cart", True, cart_id, product)

    def place_order(self, cart_id: int) -> list[Product]:
        """Empty the cart and return its products; the cart stays valid."""
        with self.carts_lock:
            self._check_open()
            cart = self._cart(cart_id)
            products = [product for product, _ in cart]
            for _, producer_id in cart:
                self._sold[producer_id] = self._sold.get(producer_id, 0) + 1
            cart.clear()
            self._ordered += len(products)
            self._orders += 1
        return self._logged("place_order", products, cart_id)

    # -- what a run asks of its market ---------------------------------------

    def close(self) -> None:
        """Close the market: every later call raises ``MarketClosedError``. Safe twice."""
        with self.carts_lock, self.list_lock:
            if self._closed:
                return
            self._closed = True
        self._logged("close", None)

    @property
    def closed(self) -> bool:
        return self._closed

    def release_cart(self, cart_id: int) -> int:
        """Put a dead consumer's units back at the end of the list; revoke the cart for good.

        Its old owner's later calls get ``CartRevokedError``. Returns how many
        units went back; 0 if already revoked.
        """
        with self.carts_lock, self.list_lock:
            if type(cart_id) is not int or cart_id not in self.carts:
                raise UnknownCartError(cart_id)
            if cart_id in self._revoked:
                return 0
            self._revoked.add(cart_id)
            self._refused_adds.pop(cart_id, None)
            cart = self.carts[cart_id]
            self.products += cart
            with self.free_lock:
                for _, producer_id in cart:
                    self.free_slots[producer_id] -= 1
            released = len(cart)
            cart.clear()
        return self._logged("release_cart", released, cart_id)

    def books(self) -> MarketBooks:
        """The counts, all locks but printing held: every unit is in one place."""
        with self.register_lock, self.carts_lock, self.list_lock, self.free_lock:
            producers = len(self.free_slots)
            on_sale = [0] * producers
            for _, producer_id in self.products:
                on_sale[producer_id] += 1
            return MarketBooks(
                queue_size_per_producer=self.queue_size_per_producer,
                producers=producers,
                carts=len(self.carts),
                published=self._published,
                on_sale=len(self.products),
                in_carts=sum(len(cart) for cart in self.carts.values()),
                ordered=self._ordered,
                orders=self._orders,
                on_sale_per_producer=tuple(on_sale),
                sold_per_producer=tuple(self._sold.get(i, 0) for i in range(producers)),
                waiting_consumers=len(self._refused_adds),
                waiting_producers=len(self._refused_publishes),
                closed=self._closed,
            )

    def audit(self) -> list[str]:
        """Recount from scratch; the invariants that fail (empty when the books are right).

        Not checked, unlike ``Marketplace.audit``: that nobody waits for a
        product on sale. Here a consumer sleeps between tries while the
        product may already be back: that is the design.
        """
        with self.register_lock, self.carts_lock, self.list_lock, self.free_lock:
            problems = []
            counted = dict.fromkeys(self.free_slots, 0)
            for _, producer_id in self.products:
                counted[producer_id] += 1
            for producer_id, free in self.free_slots.items():
                if self.queue_size_per_producer - free != counted[producer_id]:
                    problems.append(
                        f"producer {producer_id} has {free} free slots, "
                        f"holds {counted[producer_id]} on sale"
                    )
            in_carts = sum(len(cart) for cart in self.carts.values())
            if self._published != len(self.products) + in_carts + self._ordered:
                problems.append(
                    f"published {self._published} != on sale {len(self.products)} + in carts "
                    f"{in_carts} + ordered {self._ordered}"
                )
            for cart_id in self._revoked:
                if self.carts[cart_id]:
                    problems.append(f"revoked cart {cart_id} still holds units")
            return problems

    def waits(self) -> MarketWaits:
        """Who was refused last and sleeps to try again, and what fills each producer's slots."""
        with self.list_lock, self.free_lock:
            slots: dict[int, dict[Product, int]] = {}
            for product, producer_id in self.products:
                held = slots.setdefault(producer_id, {})
                held[product] = held.get(product, 0) + 1
            return MarketWaits(
                self.queue_size_per_producer,
                tuple((cart_id, product, 1) for cart_id, product in self._refused_adds.items()),
                tuple(self._refused_publishes.items()),
                {producer_id: tuple(held.items()) for producer_id, held in slots.items()},
            )

    # -- internals -----------------------------------------------------------

    def _cart(self, cart_id: int) -> list[Item]:
        """The cart's list (call with the carts lock or the list lock held)."""
        cart = self.carts.get(cart_id) if type(cart_id) is int else None
        if cart is None:
            raise UnknownCartError(cart_id)
        if cart_id in self._revoked:
            raise CartRevokedError(cart_id)
        return cart

    def _check_open(self) -> None:
        if self._closed:
            raise MarketClosedError()

    def _logged(self, operation: str, result: _T, *args: object) -> _T:
        """Return ``result``, logging the operation first (under the printing lock)."""
        if self._log:
            with self.print_lock:
                self._log.info("%s%r -> %r", operation, args, result)
        return result


def _first(items: list[Item], product: Product) -> int:
    """The index of the first item of ``product``, -1 if none: a linear scan, as the course's."""
    for index, (offered, _producer_id) in enumerate(items):
        if offered == product:
            return index
    return -1


class CourseMarket(Protocol):
    """The course's six one-try methods: a ``ClassicMarket`` and its proxy both fit."""

    def register_producer(self) -> int: ...
    def publish(self, producer_id: int, product: Product) -> bool: ...
    def new_cart(self) -> int: ...
    def add_to_cart(self, cart_id: int, product: Product) -> bool: ...
    def remove_from_cart(self, cart_id: int, product: Product) -> bool: ...
    def place_order(self, cart_id: int) -> list[Product]: ...


def poll(attempt: Callable[[], bool], timeout: float, wait: float) -> bool:
    """The course's wait: try; if refused, sleep ``wait`` and try again, until ``timeout``.

    With no ``timeout``, one try. Otherwise every refusal is followed by one
    whole sleep, the last one too, so that a caller that tries again at once
    keeps the rhythm of try, sleep, try: the call returns True at the first
    success, or False after the first sleep that ends past ``timeout``.
    """
    if attempt():
        return True
    if not timeout > 0:
        return False
    deadline = time.monotonic() + timeout
    while True:
        time.sleep(wait)
        if attempt():
            return True
        if time.monotonic() >= deadline:
            time.sleep(wait)
            return False


class ClassicAgent:
    """One agent's side of the classic design: the ``Market`` protocol over the course's six.

    ``publish`` and ``add_many`` wait as the course's threads do: a refused
    try sleeps ``republish_wait`` (``retry_wait``) in the caller's thread and
    tries again (``poll``), until the timeout the agent loop gives. An add of
    several units is that many ``add_to_cart`` calls; a remove of several,
    that many ``remove_from_cart`` calls.
    """

    def __init__(self, market: CourseMarket, *, retry_wait: float, republish_wait: float) -> None:
        self.market = market
        self.retry_wait = retry_wait
        self.republish_wait = republish_wait

    @classmethod
    def for_spec(cls, market: CourseMarket, spec: ProducerSpec | ConsumerSpec) -> ClassicAgent:
        """The agent of ``spec``, with its own wait."""
        if isinstance(spec, ProducerSpec):
            return cls(market, retry_wait=0.0, republish_wait=spec.republish_wait_time)
        return cls(market, retry_wait=spec.retry_wait_time, republish_wait=0.0)

    def register_producer(self) -> int:
        return self.market.register_producer()

    def publish(self, producer_id: int, product: Product, timeout: float = 0.0) -> bool:
        return poll(lambda: self.market.publish(producer_id, product), timeout, self.republish_wait)

    def new_cart(self) -> int:
        return self.market.new_cart()

    def add_many(self, cart_id: int, product: Product, quantity: int, timeout: float = 0.0) -> int:
        """Add ``quantity`` units one by one, each waited for; how many came by ``timeout``."""
        deadline = time.monotonic() + timeout
        added = 0
        while added < quantity:
            left = deadline - time.monotonic() if timeout > 0 else 0.0
            if added and timeout > 0 and left <= 0:
                break  # the next call tries at once: no try without its sleep after
            if not poll(lambda: self.market.add_to_cart(cart_id, product), left, self.retry_wait):
                break
            added += 1
        return added

    def remove_many(self, cart_id: int, product: Product, quantity: int) -> int:
        removed = 0
        while removed < quantity and self.market.remove_from_cart(cart_id, product):
            removed += 1
        return removed

    def place_order(self, cart_id: int) -> list[Product]:
        return self.market.place_order(cart_id)
