"""What ``mpmarket status`` and ``mpmarket serve`` show: pure formatting.

``format_*`` functions build rich renderables, lines or plain data from a
``MarketSnapshot``, ``MarketBooks`` and the attached clients; they do no I/O
(the CLI prints them). Nothing here ever sees the authkey.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict
from typing import Any

from rich.console import Group
from rich.table import Table

from mpmarket.core.books import MarketBooks, MarketSnapshot
from mpmarket.net.wire import AgentInfo

__all__ = [
    "STATUS_VERSION",
    "format_serve_line",
    "format_serve_summary",
    "format_serve_view",
    "format_status",
    "status_to_json",
]

STATUS_VERSION = 1

AGENT_ROLES = ("producer", "consumer")


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _agent_counts(agents: tuple[AgentInfo, ...]) -> str:
    roles = Counter(agent.role for agent in agents if agent.role in AGENT_ROLES)
    total = sum(roles.values())
    return f"{total} ({roles['producer']} producers, {roles['consumer']} consumers)"


def _agent_counts_short(agents: tuple[AgentInfo, ...]) -> str:
    roles = Counter(agent.role for agent in agents)
    return f"{roles['producer']} prod + {roles['consumer']} cons"


def format_status(address: str, snapshot: MarketSnapshot, agents: tuple[AgentInfo, ...]) -> Group:
    """The tables of ``mpmarket status``: totals, products on sale, carts, clients."""
    totals = Table(title=f"market at {address}", show_header=False, title_justify="left")
    totals.add_column("what", style="bold")
    totals.add_column("value", justify="right")
    totals.add_row("state", "closed" if snapshot.closed else "open")
    totals.add_row("producers registered", str(snapshot.producers))
    totals.add_row("queue size per producer", str(snapshot.queue_size_per_producer))
    totals.add_row("published", str(snapshot.published))
    totals.add_row("on sale", str(snapshot.units_on_sale))
    totals.add_row("carts", str(len(snapshot.carts)))
    totals.add_row("in carts", str(snapshot.units_in_carts))
    totals.add_row("orders", str(snapshot.orders))
    totals.add_row("products bought", str(snapshot.ordered))
    totals.add_row(
        "waiting", f"{snapshot.waiting_consumers} adds, {snapshot.waiting_producers} publishes"
    )
    totals.add_row("agents attached", _agent_counts(agents))

    on_sale = Table(title="on sale", title_justify="left")
    on_sale.add_column("producer", justify="right")
    on_sale.add_column("product")
    on_sale.add_column("units", justify="right")
    for producer_id, product, units in snapshot.on_sale:
        on_sale.add_row(str(producer_id), repr(product), str(units))

    carts = Table(title="carts holding products", title_justify="left")
    carts.add_column("cart", justify="right")
    carts.add_column("units", justify="right")
    for cart_id, units in enumerate(snapshot.carts):
        if units:
            carts.add_row(str(cart_id), str(units))

    clients = Table(title="attached", title_justify="left")
    clients.add_column("name")
    clients.add_column("role")
    clients.add_column("from")
    clients.add_column("for", justify="right")
    for agent in agents:
        clients.add_row(agent.name, agent.role, agent.host, _duration(agent.attached_s))
    return Group(totals, on_sale, carts, clients)


def status_to_json(
    address: str,
    snapshot: MarketSnapshot,
    agents: tuple[AgentInfo, ...],
    problems: list[str] | None = None,
) -> dict[str, Any]:
    """``mpmarket status --json``: versioned, plain data (products as reprs)."""
    return {
        "version": STATUS_VERSION,
        "address": address,
        "closed": snapshot.closed,
        "queue_size_per_producer": snapshot.queue_size_per_producer,
        "producers": snapshot.producers,
        "published": snapshot.published,
        "on_sale": [
            {"producer": producer_id, "product": repr(product), "units": units}
            for producer_id, product, units in snapshot.on_sale
        ],
        "units_on_sale": snapshot.units_on_sale,
        "carts": [
            {"cart": cart_id, "units": units} for cart_id, units in enumerate(snapshot.carts)
        ],
        "units_in_carts": snapshot.units_in_carts,
        "orders": snapshot.orders,
        "products_bought": snapshot.ordered,
        "waiting_consumers": snapshot.waiting_consumers,
        "waiting_producers": snapshot.waiting_producers,
        "agents": [asdict(agent) for agent in agents],
        "books": {
            "published": snapshot.published,
            "on_sale": snapshot.units_on_sale,
            "in_carts": snapshot.units_in_carts,
            "ordered": snapshot.ordered,
            "balanced": snapshot.published
            == snapshot.units_on_sale + snapshot.units_in_carts + snapshot.ordered,
            "violations": problems or [],
        },
    }


def format_serve_line(books: MarketBooks, agents: tuple[AgentInfo, ...], up_s: float) -> str:
    """One compact line of ``serve``'s live view (and of its plain log)."""
    return (
        f"up {_duration(up_s)}: {books.producers} producers, {books.on_sale} on sale, "
        f"{books.carts} carts ({books.in_carts} in carts), {books.orders} orders, "
        f"{books.ordered} bought, agents {_agent_counts(agents)}"
    )


def format_serve_view(
    address: str, books: MarketBooks, agents: tuple[AgentInfo, ...], up_s: float
) -> Table:
    """``serve``'s live view on a terminal: one small table, redrawn in place."""
    table = Table(title=f"mpmarket serve on {address}", title_justify="left", box=None)
    for column in ("up", "producers", "on sale", "carts", "in carts", "orders", "bought"):
        table.add_column(column, justify="right")
    table.add_column("attached", no_wrap=True)
    table.add_row(
        _duration(up_s),
        str(books.producers),
        str(books.on_sale),
        str(books.carts),
        str(books.in_carts),
        str(books.orders),
        str(books.ordered),
        _agent_counts_short(agents),
    )
    return table


def format_serve_summary(address: str, books: MarketBooks, up_s: float, refused: int) -> Table:
    """What ``serve`` prints when it stops."""
    table = Table(title="mpmarket serve", show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value", justify="right")
    table.add_row("address", address)
    table.add_row("served for", _duration(up_s))
    table.add_row("producers", str(books.producers))
    table.add_row("carts", str(books.carts))
    table.add_row("orders", str(books.orders))
    table.add_row("products bought", str(books.ordered))
    table.add_row("published", str(books.published))
    table.add_row("left on sale", str(books.on_sale))
    table.add_row("left in carts", str(books.in_carts))
    table.add_row("books", "balanced" if books.balanced else "NOT BALANCED")
    if refused:
        table.add_row("refused (other version)", str(refused))
    return table
