"""Turning a RunReport into things people read: rich tables and JSON.

``format_*`` functions build renderables or data and do no I/O; the CLI
prints them. A row of a table is one line however narrow the console (a
terminal, or ``COLUMNS`` for a log): a cell too wide is cut with an
ellipsis, never folded onto a second line; every name and figure is whole
in ``--json``.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from rich.table import Table
from rich.text import Text

from mpmarket.core.simulate import Simulation
from mpmarket.core.workload import purchase_line
from mpmarket.run.report import RunReport

__all__ = [
    "REPORT_VERSION",
    "efficiency",
    "format_agents",
    "format_simulation",
    "format_summary",
    "report_to_json",
    "result_lines",
]

REPORT_VERSION = 1


def result_lines(consumer: str, products: list[Any]) -> str:
    """The stdout lines of one order, newline-terminated."""
    return "".join(purchase_line(consumer, product) + "\n" for product in products)


def format_simulation(simulation: Simulation, label: str) -> list[str]:
    """Plain lines for ``mpmarket simulate``: the makespan or the deadlock."""
    if simulation.deadlock is not None:
        return [f"{label}: never finishes", *simulation.deadlock.explain()]
    return [
        f"{label} makespan: {simulation.makespan:.3f} s "
        f"({sum(simulation.purchases.values())} products bought, {simulation.published} published)"
    ]


def efficiency(report: RunReport, ideal_s: float | None) -> float | None:
    """ideal / market time: 1.0 is a run as fast as the simulated best."""
    if ideal_s is None or report.market_s <= 0:
        return None
    return ideal_s / report.market_s


def format_summary(report: RunReport, ideal_s: float | None = None) -> Table:
    """One small table: what was bought, by whom, how long each phase took."""
    table = Table(title="mpmarket run", show_header=False, title_justify="left")
    table.add_column("what", style="bold", no_wrap=True)
    table.add_column("value", justify="right", no_wrap=True)
    table.add_row("producers", str(report.producers))
    table.add_row("consumers", str(report.consumers))
    per_process = report.settings.get("agents_per_process", 1)
    if per_process > 1:
        processes = -(-report.producers // per_process) - (-report.consumers // per_process)
        table.add_row("agent processes", f"{processes} (up to {per_process} agents each)")
    table.add_row("orders", str(len(report.orders)))
    table.add_row("products bought", str(report.products_bought))
    table.add_row("start-up", f"{report.startup_s:.3f} s")
    table.add_row("market time", f"{report.market_s:.3f} s")
    ratio = efficiency(report, ideal_s)
    if ideal_s is not None and ratio is not None:
        table.add_row("simulated ideal", f"{ideal_s:.3f} s ({ratio:.1%} efficiency)")
    table.add_row("shutdown", f"{report.shutdown_s:.3f} s")
    table.add_row("wall time", f"{report.wall_s:.3f} s")
    if report.books is not None:
        books = report.books
        table.add_row("published", str(books.published))
        table.add_row("left on sale", str(books.on_sale))
        table.add_row("books", "balanced" if books.balanced else "[red]NOT balanced[/]")
    if report.deaths:
        table.add_row("agents lost", f"[red]{len(report.deaths)}[/]")
    return table


def _one_line(text: str, style: str = "") -> Text:
    """A cell that is cut with an ellipsis, never folded; a name, never markup."""
    return Text(text, style=style, no_wrap=True, overflow="ellipsis")


# Rows of the per-agent tables: enough to read, the rest is in --json.
AGENT_ROWS = 20


def format_agents(report: RunReport) -> list[Table]:
    """A table of consumers and one of producers, with totals; empty if no stats."""
    tables = []
    for role, columns in (
        ("consumer", (("sessions", "{:,}"), ("bought", "{:,}"), ("waiting_s", "{:.2f} s"))),
        ("producer", (("published", "{:,}"), ("sold", "{:,}"), ("blocked_s", "{:.2f} s"))),
    ):
        rows = [agent for agent in report.agents if agent["role"] == role]
        if not rows:
            continue
        table = Table(title=f"{role}s", title_justify="left")
        table.add_column(role)  # the column that gives way on a narrow console
        for key, _ in columns:
            label = {"waiting_s": "waiting", "blocked_s": "blocked on a full queue"}.get(key, key)
            table.add_column(label, justify="right", no_wrap=True)
        for agent in rows[:AGENT_ROWS]:
            cells = [fmt.format(agent[key]) if key in agent else "-" for key, fmt in columns]
            table.add_row(_one_line(agent["name"]), *cells)
        if len(rows) > AGENT_ROWS:
            table.add_row(
                _one_line(f"... {len(rows) - AGENT_ROWS} more (all in --json)"),
                *[""] * len(columns),
            )
        totals = [fmt.format(sum(a.get(key, 0) for a in rows)) for key, fmt in columns]
        table.add_row(_one_line("total", "bold"), *totals, end_section=True)
        tables.append(table)
    return tables


def report_to_json(
    report: RunReport, exit_code: int, ideal_s: float | None = None
) -> dict[str, Any]:
    """The ``--json`` report: versioned, plain data."""
    return {
        "version": REPORT_VERSION,
        "source": report.source,
        "workload_digest": report.workload_digest,
        "settings": report.settings,
        "started_utc": report.started_utc,
        "ended_utc": report.ended_utc,
        "exit_code": exit_code,
        "producers": report.producers,
        "consumers": report.consumers,
        "orders": [
            {"consumer": consumer, "products": [repr(p) for p in products]}
            for consumer, products in report.orders
        ],
        "products_bought": report.products_bought,
        "timings": {
            "startup_s": report.startup_s,
            "market_s": report.market_s,
            "shutdown_s": report.shutdown_s,
            "wall_s": report.wall_s,
            "ideal_s": ideal_s,
        },
        "efficiency": efficiency(report, ideal_s),
        "books": asdict(report.books) if report.books is not None else None,
        "agents": report.agents,
        "failures": report.failures,
        "deaths": [asdict(death) for death in report.deaths],
        "stall": report.stall,
        "violations": report.violations,
        "market_lost": report.market_lost,
        "interrupted": report.interrupted,
        "stopped_by": report.stopped_by,
        "cut_short": report.cut_short,
    }
