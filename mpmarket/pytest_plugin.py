"""A pytest plugin: the ``market`` fixture, a real market server for a test.

Installed with mpmarket (entry point ``pytest11``), so any project can test
its own producer and consumer code against a real server::

    def test_my_consumer(market):
        producer_id = market.proxy.register_producer()
        ...
        run_my_consumer(market.address, market.authkey)  # in another process

The server listens on 127.0.0.1 on a free port with a fresh random authkey
and is always shut down after the test. Override the ``market_queue_size``
fixture to change the cap.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from mpmarket.net.client import MarketProxy, connect
from mpmarket.net.server import new_authkey, start_server
from mpmarket.net.wire import Address

__all__ = ["MarketFixture", "market", "market_queue_size"]


@dataclass(frozen=True)
class MarketFixture:
    """What the ``market`` fixture gives: where the server is, and a proxy to it."""

    address: Address
    authkey: bytes = field(repr=False)
    proxy: MarketProxy

    def connect(self) -> MarketProxy:
        """A new proxy, for a thread or a process of the test's own."""
        return connect(self.address, self.authkey)


@pytest.fixture
def market_queue_size() -> int:
    """Products one producer may have on sale in the ``market`` fixture."""
    return 15


@pytest.fixture
def market(market_queue_size: int) -> Iterator[MarketFixture]:
    """A market server process for one test, always shut down afterwards."""
    authkey = new_authkey()
    manager = start_server(market_queue_size, authkey=authkey)
    try:
        proxy = connect(manager.address, authkey)
        try:
            yield MarketFixture(manager.address, authkey, proxy)
        finally:
            proxy.disconnect()
    finally:
        manager.shutdown()
