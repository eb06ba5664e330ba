"""What the market is and what it shows: its operations, the ``Market`` protocol, the snapshots.

The snapshots cross the wire (the server pickles them to ``status`` and to
runs), so they are frozen dataclasses of builtins and products only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from mpmarket.products import Product

__all__ = ["MARKET_OPERATIONS", "Market", "MarketBooks", "MarketSnapshot", "MarketWaits"]

# The market's operations: the Marketplace methods a client may call, the one
# list the server exposes and the proxy forwards (tests/net/test_operations.py
# holds the Marketplace, the Market protocol, the server and the proxy to it).
# Every other public method of the Marketplace stays in its process.
MARKET_OPERATIONS = (
    "register_producer",
    "publish",
    "new_cart",
    "add_to_cart",
    "add_many",
    "remove_from_cart",
    "remove_many",
    "place_order",
    "close",
    "books",
    "release_cart",
    "expire_idle_carts",
    "audit",
    "waits",
    "snapshot",
)


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
    sold_per_producer: tuple[int, ...]  # units of each producer in placed orders
    waiting_consumers: int
    waiting_producers: int
    closed: bool

    @property
    def balanced(self) -> bool:
        """True when every unit published is on sale, in a cart, or ordered."""
        return self.published == self.on_sale + self.in_carts + self.ordered


@dataclass(frozen=True)
class MarketSnapshot:
    """What ``mpmarket status`` shows, taken under the market's lock at once.

    ``on_sale``: (producer id, product, units on sale), by producer id, then
    products in the order they first went on sale in the market; ``carts``:
    units in each cart, by cart id; ``ordered``: products bought so far, in
    ``orders`` orders.
    """

    queue_size_per_producer: int
    producers: int
    published: int
    on_sale: tuple[tuple[int, Product, int], ...]
    carts: tuple[int, ...]
    orders: int
    ordered: int
    waiting_consumers: int
    waiting_producers: int
    closed: bool

    @property
    def units_on_sale(self) -> int:
        return sum(units for _, _, units in self.on_sale)

    @property
    def units_in_carts(self) -> int:
        return sum(self.carts)


@dataclass(frozen=True)
class MarketWaits:
    """Who is blocked in the market: the raw material of a stall report.

    ``consumers``: (cart id, product, units still wanted) per waiting add;
    ``producers``: (producer id, product) per waiting publish; ``slots``:
    producer id -> (product, units on sale) pairs.
    """

    queue_size_per_producer: int
    consumers: tuple[tuple[int, Product, int], ...]
    producers: tuple[tuple[int, Product], ...]
    slots: dict[int, tuple[tuple[Product, int], ...]]
