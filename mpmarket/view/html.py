"""The ``--html`` report: one self-contained page with a run's summary and charts.

``render_html`` is pure: it takes the ``--json`` report (``report_to_json``)
and the run's ``Timeline`` and returns the page as a string. The page needs
nothing but itself: inline CSS, charts drawn as inline SVG, no script, no
font, stylesheet or image from anywhere else, so it can be kept as a CI
artifact, mailed, or opened years later offline. Every text taken from the
run (names, paths, failures) is escaped.

Charts, over the market time (from the start barrier):

- products on sale per producer, against the cap (with many producers: the
  mean, the min-max band and the few busiest);
- products bought (and orders placed) per second;
- consumers waiting for products (and producers waiting on a full queue).
"""

from __future__ import annotations

import bisect
import html
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from mpmarket.run.timeline import Timeline

__all__ = ["CHART_RATE_WINDOW_S", "MAX_PRODUCER_LINES", "render_html"]

# Up to this many producers each get a line; beyond, the chart shows their
# mean and min-max band and TOP_PRODUCERS of them, so it stays readable.
MAX_PRODUCER_LINES = 6
TOP_PRODUCERS = 3

# The charts' rates are taken over this trailing window: samples come every
# fraction of a second and single orders are bursts, so per-sample rates would
# be noise; a longer window would smear the start and the end of a run. (The
# live view smooths more: view.live.LIVE_RATE_WINDOW_S.)
CHART_RATE_WINDOW_S = 1.0

# Consumers listed in the per-consumer table (the rest are summed up).
MAX_CONSUMER_ROWS = 50

# Geometry of a chart, in SVG user units (the page scales it to its width).
WIDTH, HEIGHT = 960, 280
LEFT, RIGHT, TOP, BOTTOM = 60, 20, 16, 44

PALETTE = (
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#59a14f",
    "#b07aa1",
    "#76b7b2",
    "#edc948",
    "#9c755f",
)
GREY = "#6b7280"

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
    sans-serif; }
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
th, td { padding: 4px 6px; border-bottom: 1px solid #f0f1f3; text-align: left; }
td.num, th.num { text-align: right; }
th { color: #6b7280; font-weight: 600; font-size: 13px; }
caption { text-align: left; font-weight: 600; padding: 4px 0; }
ul.legend { list-style: none; margin: 4px 0 0; padding: 0; display: flex; flex-wrap: wrap;
  gap: 4px 18px; font-size: 13px; color: #374151; }
ul.legend li { display: flex; align-items: center; gap: 6px; }
.swatch { display: inline-block; width: 18px; height: 4px; border-radius: 2px; }
.swatch.dashed { height: 0; border-top: 2px dashed; background: none !important; }
.swatch.band { height: 10px; opacity: .35; }
svg.chart { display: block; width: 100%; height: auto; margin: 4px 0; }
svg.chart text { font-size: 12px; fill: #4b5563; }
svg.chart .grid line { stroke: #eceef1; }
svg.chart .axis line { stroke: #9ca3af; }
svg.chart .empty { font-size: 15px; fill: #9ca3af; }
ul.failures { color: #991b1b; margin: 4px 0 8px; padding-left: 20px; }
section h3 { margin: 10px 0 2px; font-size: 15px; font-weight: 650; color: #991b1b; }
pre.stall { background: #fef2f2; color: #7f1d1d; padding: 8px 10px; border-radius: 6px;
  white-space: pre-wrap; overflow-wrap: anywhere; font-size: 13px; }
details summary { cursor: pointer; font-weight: 600; margin: 4px 0 8px; }
footer { color: #9ca3af; font-size: 12px; text-align: center; margin-top: 24px; }
"""


def _e(value: object) -> str:
    """Any text bound for the page, escaped for element content and attributes."""
    return html.escape(str(value), quote=True)


# -- numbers ------------------------------------------------------------------------


def _seconds(value: Any) -> str:
    return f"{value:.3f} s" if isinstance(value, int | float) else "-"


def _number(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "-" if value is None else ("yes" if value else "no")
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _ticks(maximum: float, target: int = 5, integer: bool = False) -> list[float]:
    """Round tick values from 0 to at least ``maximum``, about ``target`` of them."""
    if not math.isfinite(maximum) or maximum <= 0:
        maximum = 1.0
    raw = maximum / target
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw * 0.999)
    if integer:
        step = max(1.0, float(math.ceil(step)))
    count = max(1, math.ceil(maximum / step - 1e-9))
    return [round(i * step, 9) for i in range(count + 1)]


def _tick_label(value: float) -> str:
    return str(round(value)) if abs(value - round(value)) < 1e-9 else f"{value:g}"


def _trailing_rates(times: Sequence[float], counts: Sequence[int]) -> list[float]:
    """Per-second rate at each sample over the trailing CHART_RATE_WINDOW_S."""
    rates = []
    for i, t in enumerate(times):
        j = min(bisect.bisect_left(times, t - CHART_RATE_WINDOW_S), i)
        if j == i and i > 0:
            j = i - 1  # samples further apart than the window: the last interval
        span = t - times[j]
        rates.append((counts[i] - counts[j]) / span if span > 0 else 0.0)
    return rates


# -- charts --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Series:
    label: str
    color: str
    ys: Sequence[float]
    kind: str = "line"  # line | area | dashed | band (ys upper, low lower)
    stroke: float = 2.0
    low: Sequence[float] = ()


def _points(xs: Iterable[float], ys: Iterable[float], sx: Any, sy: Any) -> str:
    return " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in zip(xs, ys, strict=True))


def _chart(
    chart_id: str,
    title: str,
    y_label: str,
    times: Sequence[float],
    series: Sequence[_Series],
    *,
    y_max: float = 0.0,
    integer: bool = True,
) -> str:
    """One chart as an inline <svg>: grid, axes with ticks and labels, series."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    # Time runs to the last sample exactly; values up to a round tick above the top.
    x_end = times[-1] if len(times) >= 2 and times[-1] > 0 else 1.0
    x_ticks = [x for x in _ticks(x_end, target=8) if x <= x_end * (1 + 1e-9)]
    data_max = max((max(s.ys, default=0.0) for s in series), default=0.0)
    y_ticks = _ticks(max(y_max, data_max), target=5, integer=integer)
    y_end = y_ticks[-1]

    def sx(x: float) -> float:
        return LEFT + x / x_end * plot_w

    def sy(y: float) -> float:
        return TOP + plot_h - y / y_end * plot_h

    out = [
        f'<svg class="chart" id="{_e(chart_id)}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'role="img" aria-labelledby="{_e(chart_id)}-title">',
        f'<title id="{_e(chart_id)}-title">{_e(title)}</title>',
        '<g class="grid">',
    ]
    for y in y_ticks[1:]:
        out.append(f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{sy(y):.1f}" y2="{sy(y):.1f}"/>')
    for x in x_ticks[1:]:
        out.append(f'<line x1="{sx(x):.1f}" x2="{sx(x):.1f}" y1="{TOP}" y2="{TOP + plot_h}"/>')
    out.append('</g><g class="axis">')
    out.append(f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{TOP + plot_h}" y2="{TOP + plot_h}"/>')
    out.append(f'<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{TOP + plot_h}"/>')
    for x in x_ticks:
        px = sx(x)
        out.append(
            f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{TOP + plot_h}" y2="{TOP + plot_h + 5}"/>'
        )
        out.append(
            f'<text x="{px:.1f}" y="{TOP + plot_h + 19}" text-anchor="middle">'
            f"{_e(_tick_label(x))}</text>"
        )
    for y in y_ticks:
        py = sy(y)
        out.append(f'<line x1="{LEFT - 5}" x2="{LEFT}" y1="{py:.1f}" y2="{py:.1f}"/>')
        out.append(
            f'<text x="{LEFT - 9}" y="{py + 4:.1f}" text-anchor="end">{_e(_tick_label(y))}</text>'
        )
    out.append(
        f'<text x="{LEFT + plot_w / 2:.1f}" y="{HEIGHT - 6}" text-anchor="middle">'
        "time since the start barrier (s)</text>"
    )
    out.append(
        f'<text transform="translate(15 {TOP + plot_h / 2:.1f}) rotate(-90)" '
        f'text-anchor="middle">{_e(y_label)}</text>'
    )
    out.append("</g>")
    if len(times) < 2:
        out.append(
            f'<text class="empty" x="{LEFT + plot_w / 2:.1f}" y="{TOP + plot_h / 2:.1f}" '
            'text-anchor="middle">not enough samples to draw</text>'
        )
    else:
        out.append('<g class="series">')
        for s in series:
            out.append(_draw(s, times, sx, sy))
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out)


def _draw(s: _Series, times: Sequence[float], sx: Any, sy: Any) -> str:
    label = f"<title>{_e(s.label)}</title>"
    if s.kind == "band":
        upper = _points(times, s.ys, sx, sy)
        lower = _points(reversed(times), reversed(s.low), sx, sy)
        return (
            f'<polygon points="{upper} {lower}" fill="{s.color}" fill-opacity="0.18" '
            f'stroke="none">{label}</polygon>'
        )
    points = _points(times, s.ys, sx, sy)
    line = (
        f'<polyline points="{points}" fill="none" stroke="{s.color}" '
        f'stroke-width="{s.stroke}" stroke-linejoin="round" stroke-linecap="round"'
        + (' stroke-dasharray="6 5"' if s.kind == "dashed" else "")
        + f">{label}</polyline>"
    )
    if s.kind != "area":
        return line
    base = f"{sx(times[-1]):.1f},{sy(0):.1f} {sx(times[0]):.1f},{sy(0):.1f}"
    return (
        f'<polygon points="{points} {base}" fill="{s.color}" fill-opacity="0.22" '
        f'stroke="none"/>{line}'
    )


def _legend(series: Sequence[_Series]) -> str:
    items = []
    for s in series:
        kind = {"dashed": " dashed", "band": " band"}.get(s.kind, "")
        style = f"background: {s.color}; border-color: {s.color}"
        items.append(f'<li><span class="swatch{kind}" style="{style}"></span>{_e(s.label)}</li>')
    return f'<ul class="legend">{"".join(items)}</ul>'


def _section(chart_id: str, title: str, note: str, svg: str, series: Sequence[_Series]) -> str:
    legend = _legend(series) if series else ""
    return (
        f'<section class="chart-section" aria-labelledby="{_e(chart_id)}-heading">'
        f'<h2 id="{_e(chart_id)}-heading">{_e(title)}</h2>'
        f'<p class="note">{_e(note)}</p>{legend}\n{svg}</section>'
    )


def _on_sale_chart(timeline: Timeline, times: list[float]) -> str:
    count = len(timeline.producers)
    cap = timeline.queue_size_per_producer
    columns = [
        [
            s.on_sale_per_producer[i] if i < len(s.on_sale_per_producer) else 0
            for s in timeline.samples
        ]
        for i in range(count)
    ]
    cap_note = (
        f"A producer publishes while it has fewer than {cap} on sale; "
        "units put back from carts can take it above."
    )
    series: list[_Series] = []
    if count <= MAX_PRODUCER_LINES:
        note = f"Units each producer has on sale. {cap_note}"
        for i, name in enumerate(timeline.producers):
            series.append(_Series(name, PALETTE[i % len(PALETTE)], columns[i]))
    else:
        note = (
            f"{count} producers: their mean and range, and the {TOP_PRODUCERS} with the most "
            f"on sale over the run. {cap_note}"
        )
        rows = list(zip(*columns, strict=True)) if times else []
        series.append(
            _Series(
                f"min to max of {count} producers",
                PALETTE[0],
                [max(r) for r in rows],
                kind="band",
                low=[min(r) for r in rows],
            )
        )
        series.append(
            _Series(
                f"mean of {count} producers", PALETTE[0], [sum(r) / count for r in rows], stroke=3
            )
        )
        ranked = sorted(range(count), key=lambda i: (-sum(columns[i]), i))[:TOP_PRODUCERS]
        for n, i in enumerate(ranked, start=1):
            series.append(
                _Series(timeline.producers[i], PALETTE[n % len(PALETTE)], columns[i], stroke=1.5)
            )
    if cap > 0:
        series.append(_Series(f"cap ({cap})", GREY, [cap] * len(times), kind="dashed", stroke=1.5))
    title = "Products on sale per producer"
    svg = _chart("on-sale", title, "products on sale", times, series, y_max=cap)
    return _section("on-sale", title, note, svg, series)


def _rate_chart(timeline: Timeline, times: list[float], market_s: float | None) -> str:
    bought = [s.bought for s in timeline.samples]
    orders = [s.orders for s in timeline.samples]
    products_rate = _trailing_rates(times, bought)
    series = [
        _Series("products bought per second", PALETTE[3], products_rate, kind="area"),
        _Series("orders per second", PALETTE[1], _trailing_rates(times, orders), stroke=1.5),
    ]
    total_s = market_s if market_s else (times[-1] if times else 0.0)
    if total_s > 0 and bought:
        average = bought[-1] / total_s
        series.append(
            _Series(
                f"average: {average:.1f} products/s",
                GREY,
                [average] * len(times),
                kind="dashed",
                stroke=1.5,
            )
        )
    title = "Products bought per second"
    note = f"Over a trailing window of {CHART_RATE_WINDOW_S:g} s."
    svg = _chart("bought", title, "per second", times, series, integer=False)
    return _section("bought", title, note, svg, series)


def _waiting_chart(timeline: Timeline, times: list[float]) -> str:
    series = [
        _Series(
            "consumers waiting for products",
            PALETTE[1],
            [s.waiting_consumers for s in timeline.samples],
            kind="area",
        ),
        _Series(
            "producers waiting on a full queue",
            PALETTE[2],
            [s.waiting_producers for s in timeline.samples],
            stroke=1.5,
        ),
    ]
    title = "Waiting consumers"
    note = "Calls blocked in the market when the sample was taken."
    svg = _chart("waiting", title, "waiting", times, series)
    return _section("waiting", title, note, svg, series)


# -- the summary ---------------------------------------------------------------------


def _card(label: str, value: str, sub: str = "") -> str:
    sub_html = f'<div class="sub">{_e(sub)}</div>' if sub else ""
    return (
        f'<div class="card"><div class="label">{_e(label)}</div>'
        f'<div class="value">{_e(value)}</div>{sub_html}</div>'
    )


def _table(caption: str, rows: Iterable[tuple[str, str]]) -> str:
    body = "".join(
        f'<tr><th scope="row">{_e(k)}</th><td class="num">{_e(v)}</td></tr>' for k, v in rows
    )
    return f"<table><caption>{_e(caption)}</caption>{body}</table>"


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
        f'<tr><td>{_e(name)}</td><td class="num">{orders[name]}</td>'
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
        parts.append(f'<ul class="failures">{"".join(f"<li>{_e(f)}</li>" for f in flags)}</ul>')
    for key, heading in (("failures", "Failures"), ("violations", "Broken invariants")):
        items = report.get(key) or []
        if items:
            rows = "".join(f"<li>{_e(item)}</li>" for item in items)
            parts.append(f'<h3>{_e(heading)}</h3><ul class="failures">{rows}</ul>')
    deaths = [d for d in report.get("deaths") or [] if isinstance(d, dict)]
    if deaths:
        rows = "".join(
            f"<tr><td>{_e(d.get('role', ''))} {_e(d.get('name', ''))}</td><td>{_e(d.get('how', ''))}</td>"
            f'<td class="num">{_e(d.get("sessions_done", "-"))} of {_e(d.get("sessions", "-"))}</td>'
            f'<td class="num">{_e(d.get("released", "-"))}</td></tr>'
            for d in deaths
        )
        parts.append(
            "<h3>Agents lost</h3><table><tr><th>agent</th><th>how</th>"
            '<th class="num">sessions</th><th class="num">put back on sale</th></tr>'
            f"{rows}</table>"
        )
    stall = report.get("stall") or []
    if stall:
        parts.append(f'<h3>Stalled</h3><pre class="stall">{_e(chr(10).join(stall))}</pre>')
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


def render_html(report_json: dict[str, Any], timeline: Timeline) -> str:
    """The whole page: header, summary, then the three charts over time."""
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
            f"<title>mpmarket run: {_e(source)}</title>",
            f"<style>{CSS}</style>",
            "</head>",
            "<body><main>",
            "<header>",
            f'<h1>mpmarket run <span class="status {status_class}">'
            f"exit {_e(exit_code)}: {_e(meaning)}</span></h1>",
            f"<p>{_e(source)}: {len(timeline.samples)} samples over "
            f"{_seconds(times[-1] if times else 0.0)} of market time</p>",
            "</header>",
            _summary(report_json, timeline),
            _on_sale_chart(timeline, times),
            _rate_chart(timeline, times, market_s),
            _waiting_chart(timeline, times),
            f"<footer>{_e(footer)}</footer>",
            "</main></body>",
            "</html>",
            "",
        ]
    )
