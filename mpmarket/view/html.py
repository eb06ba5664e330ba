"""The ``--html`` report: one self-contained page with a run's summary and charts.

``render_html`` is pure: it takes the ``--json`` report (``report_to_json``)
and the run's ``Timeline`` (and with ``--trace`` the trace, drawn as swim
lanes: ``mpmarket.view.lanes``) and returns the page as a string. The page needs
nothing but itself: inline CSS, charts drawn as inline SVG
(``mpmarket.view.charts``), no script, no font, stylesheet or image from
anywhere else, so it can be kept as a CI artifact, mailed, or opened years
later offline. Every text taken from the run (names, paths, failures) is
escaped.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from mpmarket.run.timeline import Timeline
from mpmarket.view.charts import escape, on_sale_chart, rate_chart, waiting_chart
from mpmarket.view.lanes import swim_lanes

__all__ = ["render_html"]

# Consumers listed in the per-consumer table (the rest are summed up).
MAX_CONSUMER_ROWS = 50

EXIT_MEANINGS = {
    0: "success",
    1: "the run failed",
    2: "bad usage or workload",
    3: "the workload deadlocks",
    4: "market unreachable",
    130: "interrupted",
}

CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; background: #f4f5f7; color: #1f2937;
  font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
    sans-serif; overflow-wrap: break-word; }
main { max-width: 1040px; margin: 0 auto; padding: 28px 24px 40px; }
header h1 { margin: 0 0 2px; font-size: 24px; font-weight: 650; }
header p { margin: 0; color: #4b5563; overflow-wrap: anywhere; }
.status { display: inline-block; margin-left: 8px; padding: 1px 10px; border-radius: 999px;
  font-size: 13px; font-weight: 600; vertical-align: 3px; }
.status.ok { background: #dcfce7; color: #166534; }
.status.bad { background: #fee2e2; color: #991b1b; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr));
  gap: 12px; margin: 20px 0; }
.card, section { background: #fff; border: 1px solid #e5e7eb; border-radius: 10px;
  box-shadow: 0 1px 2px rgba(0, 0, 0, .04); }
.card { padding: 12px 14px; }
.card .label { color: #6b7280; font-size: 12px; text-transform: uppercase;
  letter-spacing: .04em; }
.card .value { font-size: 22px; font-weight: 650; font-variant-numeric: tabular-nums; }
.card .sub { color: #6b7280; font-size: 13px; }
section { padding: 14px 18px 10px; margin: 16px 0; }
section h2 { margin: 0 0 4px; font-size: 17px; font-weight: 650; }
section p.note { margin: 0 0 6px; color: #6b7280; font-size: 13px; }
.tables { display: grid; grid-template-columns: repeat(auto-fit, minmax(300px, 1fr));
  gap: 0 28px; align-items: start; }
table { border-collapse: collapse; width: 100%; margin: 4px 0 10px;
  font-variant-numeric: tabular-nums; }
th, td { padding: 4px 6px; border-bottom: 1px solid #f0f1f3; text-align: left;
  overflow-wrap: anywhere; }
td.num, th.num { text-align: right; }
th { color: #6b7280; font-weight: 600; font-size: 13px; }
caption { text-align: left; font-weight: 600; padding: 4px 0; }
ul.legend { list-style: none; margin: 4px 0 0; padding: 0; display: flex; flex-wrap: wrap;
  gap: 4px 18px; font-size: 13px; color: #374151; }
ul.legend li { display: flex; align-items: center; gap: 6px; min-width: 0;
  overflow-wrap: anywhere; }
.swatch { display: inline-block; flex: none; width: 18px; height: 4px; border-radius: 2px; }
.swatch.dashed { height: 0; border-top: 2px dashed; background: none !important; }
.swatch.band { height: 10px; opacity: .35; }
svg.chart { display: block; width: 100%; height: auto; margin: 4px 0; }
svg.chart.narrow { display: none; }
svg.chart text { font-size: 12px; fill: #4b5563; }
svg.chart .grid line { stroke: #eceef1; }
svg.chart .axis line { stroke: #9ca3af; }
svg.chart .empty { font-size: 15px; fill: #9ca3af; }
ul.failures { color: #991b1b; margin: 4px 0 8px; padding-left: 20px; overflow-wrap: anywhere; }
section h3 { margin: 10px 0 2px; font-size: 15px; font-weight: 650; color: #991b1b; }
pre.stall { background: #fef2f2; color: #7f1d1d; padding: 8px 10px; border-radius: 6px;
  white-space: pre-wrap; overflow-wrap: anywhere; font-size: 13px; }
details summary { cursor: pointer; font-weight: 600; margin: 4px 0 8px; }
footer { color: #9ca3af; font-size: 12px; text-align: center; margin-top: 24px; }
@media (max-width: 600px) {
  main { padding: 16px 12px 28px; }
  section { padding: 12px 12px 8px; }
  svg.chart.wide { display: none; }
  svg.chart.narrow { display: block; }
}
"""


# -- numbers ------------------------------------------------------------------------


def _seconds(value: Any) -> str:
    return f"{value:.3f} s" if isinstance(value, int | float) else "-"


def _number(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "-" if value is None else ("yes" if value else "no")
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


# -- the summary ---------------------------------------------------------------------


def _card(label: str, value: str, sub: str = "") -> str:
    sub_html = f'<div class="sub">{escape(sub)}</div>' if sub else ""
    return (
        f'<div class="card"><div class="label">{escape(label)}</div>'
        f'<div class="value">{escape(value)}</div>{sub_html}</div>'
    )


def _table(caption: str, rows: Iterable[tuple[str, str]]) -> str:
    body = "".join(
        f'<tr><th scope="row">{escape(k)}</th><td class="num">{escape(v)}</td></tr>'
        for k, v in rows
    )
    return f"<table><caption>{escape(caption)}</caption>{body}</table>"


def _per_consumer(report: dict[str, Any], timeline: Timeline) -> str:
    orders: Counter[str] = Counter()
    products: Counter[str] = Counter()
    for order in report.get("orders") or []:
        consumer = str(order.get("consumer", "?"))
        orders[consumer] += 1
        products[consumer] += len(order.get("products") or [])
    names = list(dict.fromkeys([*timeline.consumers, *orders]))
    if not names:
        return ""
    rows = [
        f'<tr><td>{escape(name)}</td><td class="num">{orders[name]}</td>'
        f'<td class="num">{products[name]}</td></tr>'
        for name in names[:MAX_CONSUMER_ROWS]
    ]
    rest = names[MAX_CONSUMER_ROWS:]
    if rest:
        rows.append(
            f"<tr><td>{len(rest)} more consumers</td>"
            f'<td class="num">{sum(orders[n] for n in rest)}</td>'
            f'<td class="num">{sum(products[n] for n in rest)}</td></tr>'
        )
    return (
        "<details><summary>Orders per consumer</summary><table>"
        '<tr><th>consumer</th><th class="num">orders</th><th class="num">products</th></tr>'
        f"{''.join(rows)}</table></details>"
    )


def _problems(report: dict[str, Any]) -> str:
    """What went wrong, from the report's failures, deaths, stall and violations."""
    parts = []
    flags = []
    if report.get("market_lost"):
        flags.append("The market was lost during the run.")
    if report.get("cut_short"):
        flags.append("The run was stopped at its deadline.")
    if report.get("interrupted"):
        flags.append("The run was interrupted.")
    if flags:
        parts.append(f'<ul class="failures">{"".join(f"<li>{escape(f)}</li>" for f in flags)}</ul>')
    for key, heading in (("failures", "Failures"), ("violations", "Broken invariants")):
        items = report.get(key) or []
        if items:
            rows = "".join(f"<li>{escape(item)}</li>" for item in items)
            parts.append(f'<h3>{escape(heading)}</h3><ul class="failures">{rows}</ul>')
    deaths = [d for d in report.get("deaths") or [] if isinstance(d, dict)]
    if deaths:
        rows = "".join(
            f"<tr><td>{escape(d.get('role', ''))} {escape(d.get('name', ''))}</td><td>{escape(d.get('how', ''))}</td>"
            f'<td class="num">{escape(d.get("sessions_done", "-"))} of {escape(d.get("sessions", "-"))}</td>'
            f'<td class="num">{escape(d.get("released", "-"))}</td></tr>'
            for d in deaths
        )
        parts.append(
            "<h3>Agents lost</h3><table><tr><th>agent</th><th>how</th>"
            '<th class="num">sessions</th><th class="num">put back on sale</th></tr>'
            f"{rows}</table>"
        )
    stall = report.get("stall") or []
    if stall:
        parts.append(f'<h3>Stalled</h3><pre class="stall">{escape(chr(10).join(stall))}</pre>')
    return "".join(parts)


def _summary(report: dict[str, Any], timeline: Timeline) -> str:
    timings = report.get("timings") or {}
    books = report.get("books") or {}
    bought = report.get("products_bought", 0)
    to_buy = timeline.products_to_buy
    efficiency = report.get("efficiency")
    cards = [
        _card("products bought", f"{bought}", f"of {to_buy} to buy" if to_buy else ""),
        _card(
            "orders", str(len(report.get("orders") or [])), f"{timeline.sessions_to_run} sessions"
        ),
        _card(
            "producers",
            str(report.get("producers", len(timeline.producers))),
            f"up to {timeline.queue_size_per_producer} on sale each",
        ),
        _card("consumers", str(report.get("consumers", len(timeline.consumers)))),
        _card(
            "market time",
            _seconds(timings.get("market_s")),
            f"ideal {_seconds(timings.get('ideal_s'))}" if timings.get("ideal_s") else "",
        ),
        _card(
            "efficiency",
            f"{efficiency:.1%}" if isinstance(efficiency, int | float) else "-",
            "ideal / market time",
        ),
        _card("wall time", _seconds(timings.get("wall_s"))),
    ]
    timing_rows = [
        ("start-up", _seconds(timings.get("startup_s"))),
        ("market time", _seconds(timings.get("market_s"))),
        ("simulated ideal", _seconds(timings.get("ideal_s"))),
        ("shutdown", _seconds(timings.get("shutdown_s"))),
        ("wall time", _seconds(timings.get("wall_s"))),
    ]
    book_keys = (
        "published",
        "on_sale",
        "in_carts",
        "ordered",
        "orders",
        "carts",
        "producers",
        "queue_size_per_producer",
        "closed",
    )
    book_rows = [(key.replace("_", " "), _number(books[key])) for key in book_keys if key in books]
    if {"published", "on_sale", "in_carts", "ordered"} <= books.keys():
        balanced = books["published"] == books["on_sale"] + books["in_carts"] + books["ordered"]
        book_rows.append(("balanced", "yes" if balanced else "NO"))
    tables = _table("Timings", timing_rows)
    tables += _table("Books at the end", book_rows) if book_rows else ""
    return (
        f'<div class="cards">{"".join(cards)}</div>'
        f'<section class="summary"><h2>Summary</h2>{_problems(report)}'
        f'<div class="tables">{tables}</div>{_per_consumer(report, timeline)}</section>'
    )


def render_html(
    report_json: dict[str, Any], timeline: Timeline, trace: dict[str, Any] | None = None
) -> str:
    """The whole page: header, summary, the three charts over time, then the
    swim lanes of ``trace`` (``--trace``'s document) when given."""
    source = str(report_json.get("source", "mpmarket run"))
    exit_code = report_json.get("exit_code")
    meaning = EXIT_MEANINGS.get(exit_code, "unknown") if isinstance(exit_code, int) else "unknown"
    if report_json.get("interrupted"):
        meaning = "interrupted"
    status_class = "ok" if exit_code == 0 else "bad"
    times = [s.t for s in timeline.samples]
    timings = report_json.get("timings") or {}
    market_s = timings.get("market_s") if isinstance(timings.get("market_s"), int | float) else None
    version = report_json.get("version")
    footer = f"mpmarket run report, format version {version}" if version is not None else ""
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>mpmarket run: {escape(source)}</title>",
            f"<style>{CSS}</style>",
            "</head>",
            "<body><main>",
            "<header>",
            f'<h1>mpmarket run <span class="status {status_class}">'
            f"exit {escape(exit_code)}: {escape(meaning)}</span></h1>",
            f"<p>{escape(source)}: {len(timeline.samples)} samples over "
            f"{_seconds(times[-1] if times else 0.0)} of market time</p>",
            "</header>",
            _summary(report_json, timeline),
            on_sale_chart(timeline, times),
            rate_chart(timeline, times, market_s),
            waiting_chart(timeline, times),
            swim_lanes(trace) if trace is not None else "",
            f"<footer>{escape(footer)}</footer>",
            "</main></body>",
            "</html>",
            "",
        ]
    )
