"""mpmarket: a producer-consumer marketplace of real processes.

The public surface, declared once: ``from mpmarket import connect,
start_server, Marketplace``. Everything else lives in the layers, each a
package importing only those above it: ``errors`` and ``products`` at the top,
then ``core`` (the market, no processes), ``proc``, ``net``, ``run``, ``view``,
``bench`` and ``cli``; docs/architecture.md maps every module.

``import mpmarket`` loads the top and ``core`` only. The names of the served
market (``connect``, ``start_server``, ``MarketProxy``) come from ``net``,
which is loaded on their first use (PEP 562, as ``concurrent.futures`` does),
so ``mpmarket --version`` does not start up ``multiprocessing.managers``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from mpmarket.core.books import MarketBooks, MarketSnapshot
from mpmarket.core.load import load_workload
from mpmarket.core.market import Marketplace
from mpmarket.core.workload import Workload
from mpmarket.errors import (
    AuthkeyError,
    CartRevokedError,
    InvalidArgumentError,
    MarketChangedError,
    MarketClosedError,
    MarketError,
    MarketLostError,
    MarketUnavailableError,
    MpmarketError,
    RunError,
    StallError,
    UnknownCartError,
    UnknownProducerError,
    UnsafeReplyError,
    VersionMismatchError,
    WorkloadError,
)
from mpmarket.products import Coffee, Product, Tea

if TYPE_CHECKING:  # what _LAZY loads, spelled out for type checkers
    from mpmarket.net.client import MarketProxy, connect
    from mpmarket.net.server import start_server

__version__ = "0.2.0"

__all__ = [
    "AuthkeyError",
    "CartRevokedError",
    "Coffee",
    "InvalidArgumentError",
    "MarketBooks",
    "MarketChangedError",
    "MarketClosedError",
    "MarketError",
    "MarketLostError",
    "MarketProxy",
    "MarketSnapshot",
    "MarketUnavailableError",
    "Marketplace",
    "MpmarketError",
    "Product",
    "RunError",
    "StallError",
    "Tea",
    "UnknownCartError",
    "UnknownProducerError",
    "UnsafeReplyError",
    "VersionMismatchError",
    "Workload",
    "WorkloadError",
    "__version__",
    "connect",
    "load_workload",
    "start_server",
]

# Names loaded on first use: name -> the module that defines it.
_LAZY: dict[str, str] = {
    "MarketProxy": "mpmarket.net.client",
    "connect": "mpmarket.net.client",
    "start_server": "mpmarket.net.server",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # found directly from now on, without this hook
    return value


def __dir__() -> list[str]:
    """The public names, loaded or not, and the dunders (as ``concurrent.futures`` lists them)."""
    return sorted({*__all__, *(name for name in globals() if name.startswith("__"))})
