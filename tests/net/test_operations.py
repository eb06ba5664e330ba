"""The market's operations agree everywhere they are named.

They are listed once (``MARKET_OPERATIONS``, next to the ``Market`` protocol)
and met four times: the Marketplace's public methods, the protocol agents use,
what the server exposes (``EXPOSED``, and what it really answers) and the
proxy's wrappers. A method added to one and not the others, or a parameter
renamed on one side, fails here.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Sequence
from multiprocessing import managers
from typing import Protocol

import pytest

from mpmarket.core.books import MARKET_OPERATIONS, Market
from mpmarket.core.market import Marketplace
from mpmarket.net.calls import WAITING_CALLS
from mpmarket.net.client import MarketProxy, open_connection
from mpmarket.net.mp_private import dispatch
from mpmarket.net.server import ServedMarket, new_authkey
from mpmarket.net.wire import EXPOSED, MARKET_IDENT
from mpmarket.products import Product

# Public methods of the Marketplace that stay in its process: the serving
# loop's way to park a call that waits and to let lapsed places go
# (``mpmarket.net.loop``).
IN_PROCESS_ONLY = frozenset(
    {"start_publish", "finish_publish", "start_add", "finish_add", "next_lapse", "let_lapses_go"}
)
# Public methods of the proxy that are not the market's: the session's list of
# clients, and closing the thread's connection.
PROXY_ONLY = frozenset({"agents", "disconnect"})


def _public_methods(cls: type) -> set[str]:
    return {
        name
        for name, member in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_")
    }


def _own_methods(protocol: type) -> set[str]:
    return {
        name
        for name, member in vars(protocol).items()
        if inspect.isfunction(member) and not name.startswith("_")
    }


def disagreements(
    marketplace: type, proxy: type, exposed: Sequence[str], protocol: type = Market
) -> list[str]:
    """Every way the four disagree, one line each (empty when they agree)."""
    problems: list[str] = []
    listed = set(exposed)
    if len(listed) != len(exposed):
        problems.append("an operation is listed twice")
    served = _public_methods(marketplace) - IN_PROCESS_ONLY
    forwarded = _public_methods(proxy) - PROXY_ONLY
    agents_need = _own_methods(protocol)
    problems += [f"Marketplace.{name} is not exposed" for name in sorted(served - listed)]
    problems += [f"{name} is exposed, not a Marketplace method" for name in sorted(listed - served)]
    problems += [f"the proxy does not forward {name}" for name in sorted(listed - forwarded)]
    problems += [f"the proxy's {name} is not exposed" for name in sorted(forwarded - listed)]
    problems += [f"the protocol's {name} is not exposed" for name in sorted(agents_need - listed)]
    for name in sorted(listed & served & forwarded):
        ours = inspect.signature(getattr(marketplace, name))
        theirs = inspect.signature(getattr(proxy, name))
        if ours != theirs:
            problems.append(f"{name}: Marketplace{ours} but proxy{theirs}")
    for name in sorted(agents_need & served):
        ours = inspect.signature(getattr(marketplace, name))
        needed = inspect.signature(getattr(protocol, name))
        if ours != needed:
            problems.append(f"{name}: Marketplace{ours} but protocol{needed}")
    return problems


def test_the_marketplace_the_protocol_the_server_and_the_proxy_agree():
    assert EXPOSED == MARKET_OPERATIONS
    assert disagreements(Marketplace, MarketProxy, EXPOSED) == []


def test_the_calls_that_wait_are_operations():
    assert set(WAITING_CALLS) <= set(EXPOSED)


# -- the check can fail --------------------------------------------------------


class _WithANewMethod(Marketplace):
    def discount(self, cart_id: int) -> int:
        return cart_id


class _Renamed(MarketProxy):
    def publish(self, producer_id: int, item: Product, timeout: float = 0.0) -> bool:
        return super().publish(producer_id, item, timeout)


class _ForwardsMore(MarketProxy):
    def discount(self, cart_id: int) -> int:
        return self._call("discount", (cart_id,))


class _NeedsMore(Market, Protocol):
    def discount(self, cart_id: int) -> int: ...


def test_a_method_added_to_the_marketplace_alone_is_caught():
    assert disagreements(_WithANewMethod, MarketProxy, EXPOSED) == [
        "Marketplace.discount is not exposed"
    ]


def test_an_operation_left_out_of_the_list_is_caught():
    exposed = tuple(name for name in EXPOSED if name != "audit")
    assert disagreements(Marketplace, MarketProxy, exposed) == [
        "Marketplace.audit is not exposed",
        "the proxy's audit is not exposed",
    ]


def test_a_proxy_that_renames_a_parameter_or_forwards_more_is_caught():
    [problem] = disagreements(Marketplace, _Renamed, EXPOSED)
    assert problem.startswith("publish: Marketplace(self, producer_id") and "item" in problem
    assert disagreements(Marketplace, _ForwardsMore, EXPOSED) == [
        "the proxy's discount is not exposed"
    ]
    assert disagreements(Marketplace, MarketProxy, EXPOSED, _NeedsMore) == [
        "the protocol's discount is not exposed"
    ]


# -- what the server really answers --------------------------------------------


@pytest.fixture
def raw_connection():
    market = Marketplace(3)
    authkey = new_authkey()
    serving = ServedMarket(market, ("127.0.0.1", 0), authkey)
    serving.start()
    conn = open_connection(serving.address, authkey, time.monotonic() + 10)
    try:
        dispatch(conn, None, "accept_connection", ("operations-test",))
        yield conn
    finally:
        conn.close()
        market.close()


def test_the_server_answers_every_operation_and_nothing_else_of_the_market(raw_connection):
    junk = ("a", "b", "c", "d", "e")  # more arguments than any operation takes
    for name in EXPOSED:  # reached: the Marketplace method refuses the arguments
        with pytest.raises(TypeError):
            dispatch(raw_connection, MARKET_IDENT, name, junk)
    for name in sorted(IN_PROCESS_ONLY | {"closed", "_lock"}):
        with pytest.raises(managers.RemoteError, match="not exposed"):
            dispatch(raw_connection, MARKET_IDENT, name, ())
