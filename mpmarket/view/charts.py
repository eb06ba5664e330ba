"""The charts of the ``--html`` page: a run's ``Timeline`` drawn as inline SVG.

Each chart is a ``<section>`` with its title, a note, a legend and the chart
drawn twice as ``<svg>``: wide for a desktop, narrow for a phone, the page's
CSS showing one (an SVG scales as a whole, so a 960-unit wide chart on a
340 px phone would have 4 px text). No script, nothing from elsewhere. Every
text taken from the run is escaped (``escape``). The colours are Okabe and
Ito's, made to stay apart for colour-blind readers. Over the market time
(from the start barrier), each axis labelled with its unit:

- products on sale per producer, against the cap (with many producers: the
  mean, the min-max band and the few busiest): ``on_sale_chart``;
- products bought (and orders placed) per second: ``rate_chart``;
- consumers waiting for products (and producers waiting on a full queue):
  ``waiting_chart``.
"""

from __future__ import annotations

import bisect
import html
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from mpmarket.run.timeline import Timeline

__all__ = [
    "CHART_RATE_WINDOW_S",
    "MAX_PRODUCER_LINES",
    "NARROW",
    "OKABE_ITO",
    "WIDE",
    "escape",
    "on_sale_chart",
    "rate_chart",
    "waiting_chart",
]

# Up to this many producers each get a line; beyond, the chart shows their
# mean and min-max band and TOP_PRODUCERS of them, so it stays readable.
MAX_PRODUCER_LINES = 6
TOP_PRODUCERS = 3

# The charts' rates are taken over this trailing window: samples come every
# fraction of a second and single orders are bursts, so per-sample rates would
# be noise; a longer window would smear the start and the end of a run. (The
# live view smooths more: view.live.LIVE_RATE_WINDOW_S.)
CHART_RATE_WINDOW_S = 1.0


@dataclass(frozen=True)
class Geometry:
    """One drawing of a chart, in SVG user units (the page scales it to its width)."""

    name: str  # the svg's class beside "chart": the page's CSS shows one per width
    width: int
    height: int
    left: int
    right: int
    top: int
    bottom: int
    x_ticks: int  # about this many ticks on the time axis


# Drawn at about its own size on a desktop (the page is up to 1040 px wide) and
# on a 390 px phone (340 px left inside the page's padding).
WIDE = Geometry("wide", 960, 280, 60, 20, 16, 44, x_ticks=8)
NARROW = Geometry("narrow", 340, 260, 58, 16, 14, 44, x_ticks=4)

# Okabe & Ito, "Color Universal Design" (2008): eight colours that stay
# distinct under the common colour-vision deficiencies. The charts draw their
# series in PALETTE's order (yellow last: it is faint on white).
OKABE_ITO = {
    "black": "#000000",
    "orange": "#e69f00",
    "sky blue": "#56b4e9",
    "bluish green": "#009e73",
    "yellow": "#f0e442",
    "blue": "#0072b2",
    "vermillion": "#d55e00",
    "reddish purple": "#cc79a7",
}
PALETTE = tuple(
    OKABE_ITO[name]
    for name in (
        "blue",
        "orange",
        "bluish green",
        "vermillion",
        "reddish purple",
        "sky blue",
        "black",
        "yellow",
    )
)
# Reference lines (the cap, the average): grey and dashed, apart from the series.
GREY = "#6b7280"

# Every chart's time axis.
X_LABEL = "time since the start barrier (s)"


def escape(value: object) -> str:
    """Any text bound for the page, escaped for element content and attributes."""
    return html.escape(str(value), quote=True)


# -- numbers ------------------------------------------------------------------------


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


def _tick_label(value: float, thousands: bool = False) -> str:
    """A tick's number; in thousands ("15k") on an axis that reaches 10,000."""
    if thousands and value:
        return _tick_label(value / 1000) + "k"
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
    """The chart drawn for each width (WIDE, then NARROW), one <svg> each."""
    return "\n".join(
        _svg(g, chart_id, title, y_label, times, series, y_max=y_max, integer=integer)
        for g in (WIDE, NARROW)
    )


def _svg(
    g: Geometry,
    chart_id: str,
    title: str,
    y_label: str,
    times: Sequence[float],
    series: Sequence[_Series],
    *,
    y_max: float,
    integer: bool,
) -> str:
    """One chart as an inline <svg>: grid, axes with ticks and labels, series."""
    left, top = g.left, g.top
    plot_w, plot_h = g.width - g.left - g.right, g.height - g.top - g.bottom
    # Time runs to the last sample exactly; values up to a round tick above the top.
    x_end = times[-1] if len(times) >= 2 and times[-1] > 0 else 1.0
    x_ticks = [x for x in _ticks(x_end, target=g.x_ticks) if x <= x_end * (1 + 1e-9)]
    data_max = max((max(s.ys, default=0.0) for s in series), default=0.0)
    y_ticks = _ticks(max(y_max, data_max), target=5, integer=integer)
    y_end = y_ticks[-1]

    def sx(x: float) -> float:
        return left + x / x_end * plot_w

    def sy(y: float) -> float:
        return top + plot_h - y / y_end * plot_h

    svg_id = escape(chart_id if g is WIDE else f"{chart_id}-{g.name}")
    out = [
        f'<svg class="chart {g.name}" id="{svg_id}" viewBox="0 0 {g.width} {g.height}" '
        f'role="img" aria-labelledby="{svg_id}-title">',
        f'<title id="{svg_id}-title">{escape(title)}</title>',
        '<g class="grid">',
    ]
    for y in y_ticks[1:]:
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{sy(y):.1f}" y2="{sy(y):.1f}"/>')
    for x in x_ticks[1:]:
        out.append(f'<line x1="{sx(x):.1f}" x2="{sx(x):.1f}" y1="{top}" y2="{top + plot_h}"/>')
    out.append('</g><g class="axis">')
    out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" y2="{top + plot_h}"/>')
    out.append(f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + plot_h}"/>')
    for x in x_ticks:
        px = sx(x)
        out.append(
            f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{top + plot_h}" y2="{top + plot_h + 5}"/>'
        )
        out.append(
            f'<text x="{px:.1f}" y="{top + plot_h + 19}" text-anchor="middle">'
            f"{escape(_tick_label(x))}</text>"
        )
    thousands = y_end >= 10_000  # five digits would run into the axis label
    for y in y_ticks:
        py = sy(y)
        label = escape(_tick_label(y, thousands))
        out.append(f'<line x1="{left - 5}" x2="{left}" y1="{py:.1f}" y2="{py:.1f}"/>')
        out.append(f'<text x="{left - 9}" y="{py + 4:.1f}" text-anchor="end">{label}</text>')
    out.append(
        f'<text class="x-label" x="{left + plot_w / 2:.1f}" y="{g.height - 6}" '
        f'text-anchor="middle">{X_LABEL}</text>'
    )
    out.append(
        f'<text class="y-label" transform="translate(15 {top + plot_h / 2:.1f}) rotate(-90)" '
        f'text-anchor="middle">{escape(y_label)}</text>'
    )
    out.append("</g>")
    if len(times) < 2:
        out.append(
            f'<text class="empty" x="{left + plot_w / 2:.1f}" y="{top + plot_h / 2:.1f}" '
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
    label = f"<title>{escape(s.label)}</title>"
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
        items.append(
            f'<li><span class="swatch{kind}" style="{style}"></span>{escape(s.label)}</li>'
        )
    return f'<ul class="legend">{"".join(items)}</ul>'


def _section(chart_id: str, title: str, note: str, svg: str, series: Sequence[_Series]) -> str:
    legend = _legend(series) if series else ""
    return (
        f'<section class="chart-section" aria-labelledby="{escape(chart_id)}-heading">'
        f'<h2 id="{escape(chart_id)}-heading">{escape(title)}</h2>'
        f'<p class="note">{escape(note)}</p>{legend}\n{svg}</section>'
    )


def on_sale_chart(timeline: Timeline, times: list[float]) -> str:
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


def rate_chart(timeline: Timeline, times: list[float], market_s: float | None) -> str:
    bought = [s.bought for s in timeline.samples]
    orders = [s.orders for s in timeline.samples]
    products_rate = _trailing_rates(times, bought)
    series = [
        _Series("products bought per second", PALETTE[0], products_rate, kind="area"),
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
    svg = _chart("bought", title, "products or orders per s", times, series, integer=False)
    return _section("bought", title, note, svg, series)


def waiting_chart(timeline: Timeline, times: list[float]) -> str:
    series = [
        _Series(
            "consumers waiting for products",
            PALETTE[3],
            [s.waiting_consumers for s in timeline.samples],
            kind="area",
        ),
        _Series(
            "producers waiting on a full queue",
            PALETTE[0],
            [s.waiting_producers for s in timeline.samples],
            stroke=1.5,
        ),
    ]
    title = "Waiting consumers"
    note = "Calls blocked in the market when the sample was taken."
    svg = _chart("waiting", title, "agents waiting", times, series)
    return _section("waiting", title, note, svg, series)
