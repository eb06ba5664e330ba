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

Override ``market_tls`` to serve TLS only: it returns a ``MarketTLS`` (the
certificate, its key, and the CA that verifies it; by default its CA comes
from ``$MPMARKET_TLS_CA`` when the certificate and key are given). The
fixture's proxies, and the processes the test starts (through the
environment), then speak TLS to it; ``market.tls_ca`` is the CA file::

    @pytest.fixture
    def market_tls(tmp_path):
        return MarketTLS("server.pem", "server.key", "ca.pem")
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mpmarket.net.client import MarketProxy, connect
from mpmarket.net.server import new_authkey, start_server
from mpmarket.net.tls import ENV_CA, forget, trust
from mpmarket.net.wire import Address

__all__ = ["MarketFixture", "MarketTLS", "market", "market_queue_size", "market_tls"]


@dataclass(frozen=True)
class MarketTLS:
    """TLS for the ``market`` fixture: its server's certificate and key, the CA to verify it.

    ``ca`` defaults to ``$MPMARKET_TLS_CA``.
    """

    cert: str | Path
    key: str | Path = field(repr=False)
    ca: str | Path | None = None

    def ca_file(self) -> Path:
        ca = self.ca if self.ca is not None else os.environ.get(ENV_CA)
        if not ca:
            raise pytest.UsageError(f"MarketTLS needs a CA file: give ca= or set ${ENV_CA}")
        return Path(ca)


@dataclass(frozen=True)
class MarketFixture:
    """What the ``market`` fixture gives: where the server is, and a proxy to it."""

    address: Address
    authkey: bytes = field(repr=False)
    proxy: MarketProxy
    tls_ca: Path | None = None  # the CA file the proxies verify the server with (TLS)

    def connect(self) -> MarketProxy:
        """A new proxy, for a thread or a process of the test's own."""
        return connect(self.address, self.authkey)


@pytest.fixture
def market_queue_size() -> int:
    """Products one producer may have on sale in the ``market`` fixture."""
    return 15


@pytest.fixture
def market_tls() -> MarketTLS | None:
    """TLS for the ``market`` fixture's server: None, plaintext (override to serve TLS)."""
    return None


@pytest.fixture
def market(market_queue_size: int, market_tls: MarketTLS | None) -> Iterator[MarketFixture]:
    """A market server process for one test, always shut down afterwards."""
    authkey = new_authkey()
    files = None
    ca = None
    if market_tls is not None:
        ca = market_tls.ca_file()
        files = (Path(market_tls.cert), Path(market_tls.key))
    manager = start_server(market_queue_size, authkey=authkey, tls_files=files)
    try:
        if ca is not None:
            trust(manager.address, ca)
        proxy = connect(manager.address, authkey)
        try:
            yield MarketFixture(manager.address, authkey, proxy, ca)
        finally:
            proxy.disconnect()
    finally:
        manager.shutdown()
        if ca is not None:
            forget(manager.address)
