"""Fixtures of the wire's tests: a market served in this process, rogue servers."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mpmarket.core.market import Marketplace
from mpmarket.net.server import ServedMarket, new_authkey
from tests.net.test_safe_pickle import _RogueServer


@contextlib.contextmanager
def serving_market(queue_size: int) -> Iterator[tuple[ServedMarket, bytes]]:
    """A market of ``queue_size`` served on loopback, and its key; closed at the end."""
    market = Marketplace(queue_size)
    authkey = new_authkey()
    serving = ServedMarket(market, ("127.0.0.1", 0), authkey)
    serving.start()
    try:
        yield serving, authkey
    finally:
        market.close()


@pytest.fixture
def served() -> Iterator[tuple[ServedMarket, bytes]]:
    with serving_market(3) as served:
        yield served


@pytest.fixture
def rogue() -> Iterator[Callable[..., _RogueServer]]:
    servers: list[_RogueServer] = []

    def start(answer: bytes, authkey: bytes, **kwargs: Any) -> _RogueServer:
        servers.append(_RogueServer(answer, authkey, **kwargs))
        return servers[-1]

    yield start
    for server in servers:
        server.close()
