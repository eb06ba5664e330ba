"""The ``--html`` page's swim lanes: the ``--trace`` timeline, drawn without a viewer.

``swim_lanes`` takes the Trace Event document (``run.trace.build_trace``) and
draws one lane per agent (its track in the trace): its sessions as a pale
band, making in the Okabe-Ito palette's sky blue, market calls (publish, add,
remove) in its blue and orders in its green, waits (a publish blocked on a full queue, an add waiting for
its product) in orange, and the market's hand-overs as thin arrows from the
publish (or remove) to the add they completed. Runs of more than
``MAX_LANES`` agents get a note instead: open the file in a viewer.
"""

from __future__ import annotations

from typing import Any

from mpmarket.view.charts import GREY, OKABE_ITO, X_LABEL, _tick_label, _ticks, escape

__all__ = ["MAX_LANES", "swim_lanes"]

# More lanes than this are no longer read by eye (and the page grows long).
MAX_LANES = 40
# Hand-over arrows drawn at most (beyond, they hide the lanes).
MAX_ARROWS = 600

WORK = OKABE_ITO["blue"]
MAKE = OKABE_ITO["sky blue"]
ORDER = OKABE_ITO["bluish green"]
WAIT = OKABE_ITO["orange"]
SESSION = "#e5e7eb"
ARROW = OKABE_ITO["reddish purple"]

_WIDTH, _LEFT, _RIGHT, _TOP, _BOTTOM, _LANE = 960, 110, 16, 8, 40, 20
_NOTE = (
    "Each agent's calls over time, from --trace: making in light blue, market calls in "
    "blue, orders in green, "
    "waits in orange (a publish blocked on a full queue, an add waiting for its product), "
    "sessions as grey bands; purple arrows: the market handed a published (or removed) "
    "unit to a waiting add. Open the --trace file in ui.perfetto.dev for more."
)


def _color(name: str, category: str) -> str:
    if category == "wait":
        return WAIT
    return {"order": ORDER, "make": MAKE}.get(name, WORK)


def swim_lanes(trace: dict[str, Any]) -> str:
    """The section with the lanes (or the note that there are too many)."""
    events = trace.get("traceEvents") or []
    names: dict[tuple[int, int], str] = {}
    for event in events:
        if event.get("ph") == "M" and event.get("name") == "thread_name":
            names[(event["pid"], event["tid"])] = str(event["args"]["name"])
    lanes = sorted(names)
    heading = '<h2 id="lanes-heading">Swim lanes: each agent over time</h2>'
    if not lanes:
        body = '<p class="note">No agent spans in the trace.</p>'
    elif len(lanes) > MAX_LANES:
        body = (
            f'<p class="note">{len(lanes)} agents: too many lanes to read here (at most '
            f"{MAX_LANES}). Open the --trace file in ui.perfetto.dev or chrome://tracing.</p>"
        )
    else:
        body = f'<p class="note">{escape(_NOTE)}</p>{_legend()}\n{_svg(events, lanes, names)}'
    return (
        f'<section class="chart-section" aria-labelledby="lanes-heading">{heading}{body}</section>'
    )


def _legend() -> str:
    items = [
        ("making", MAKE),
        ("market call", WORK),
        ("order", ORDER),
        ("wait", WAIT),
        ("session", SESSION),
    ]
    parts = [
        f'<li><span class="swatch band" style="background: {color}; opacity: 1"></span>{label}</li>'
        for label, color in items
    ]
    parts.append(f'<li><span class="swatch" style="background: {ARROW}"></span>hand-over</li>')
    return f'<ul class="legend">{"".join(parts)}</ul>'


def _svg(
    events: list[dict[str, Any]], lanes: list[tuple[int, int]], names: dict[tuple[int, int], str]
) -> str:
    row = {lane: i for i, lane in enumerate(lanes)}
    spans = [e for e in events if e.get("ph") == "X" and (e["pid"], e["tid"]) in row]
    end_us = max((e["ts"] + e["dur"] for e in spans), default=0.0)
    x_end = max(end_us / 1e6, 1e-3)
    plot_w = _WIDTH - _LEFT - _RIGHT
    height = _TOP + len(lanes) * _LANE + _BOTTOM

    def sx(us: float) -> float:
        return _LEFT + us / 1e6 / x_end * plot_w

    def sy(lane: tuple[int, int]) -> float:
        return _TOP + row[lane] * _LANE

    out = [
        f'<svg class="chart lanes" id="lanes" viewBox="0 0 {_WIDTH} {height}" role="img" '
        'aria-labelledby="lanes-title">',
        '<title id="lanes-title">Swim lanes: each agent\'s calls over time</title>',
        '<g class="axis">',
    ]
    bottom = _TOP + len(lanes) * _LANE
    out.append(f'<line x1="{_LEFT}" x2="{_LEFT + plot_w}" y1="{bottom}" y2="{bottom}"/>')
    for x in [x for x in _ticks(x_end, target=8) if x <= x_end * (1 + 1e-9)]:
        px = _LEFT + x / x_end * plot_w
        out.append(f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{bottom}" y2="{bottom + 5}"/>')
        out.append(
            f'<text x="{px:.1f}" y="{bottom + 18}" text-anchor="middle">'
            f"{escape(_tick_label(x))}</text>"
        )
    out.append(
        f'<text class="x-label" x="{_LEFT + plot_w / 2:.1f}" y="{height - 4}" '
        f'text-anchor="middle">{X_LABEL}</text>'
    )
    for lane in lanes:
        y = sy(lane)
        out.append(
            f'<text x="{_LEFT - 6}" y="{y + _LANE / 2 + 4:.1f}" text-anchor="end">'
            f"{escape(names[lane][:14])}</text>"
        )
        out.append(
            f'<line x1="{_LEFT}" x2="{_LEFT + plot_w}" y1="{y + _LANE:.1f}" y2="{y + _LANE:.1f}" '
            'stroke="#f0f1f3"/>'
        )
    out.append('</g><g class="series">')
    # Sessions first (behind), then the calls, each at least half a unit wide.
    for event in sorted(spans, key=lambda e: e["name"] != "session"):
        lane = (event["pid"], event["tid"])
        x, w = sx(event["ts"]), max(event["dur"] / 1e6 / x_end * plot_w, 0.5)
        if event["name"] == "session":
            y, h, color = sy(lane) + 2, _LANE - 4, SESSION
        else:
            y, h, color = sy(lane) + 5, _LANE - 10, _color(event["name"], event.get("cat", ""))
        out.append(
            f'<rect x="{x:.2f}" y="{y:.1f}" width="{w:.2f}" height="{h}" fill="{color}">'
            f"<title>{escape(names[lane])}: {escape(event['name'])} "
            f"{event['dur'] / 1000:.1f} ms</title></rect>"
        )
    out.append(_arrows(events, row, sx, sy))
    out.append("</g></svg>")
    return "\n".join(out)


def _arrows(events: list[dict[str, Any]], row: dict[tuple[int, int], int], sx: Any, sy: Any) -> str:
    """The hand-overs: a line from each flow's start to its finish."""
    starts = {e["id"]: e for e in events if e.get("ph") == "s"}
    lines: list[str] = []
    for event in events:
        if event.get("ph") != "f" or len(lines) >= MAX_ARROWS:
            continue
        start = starts.get(event["id"])
        a, b = (start["pid"], start["tid"]) if start else None, (event["pid"], event["tid"])
        if start is None or a not in row or b not in row:
            continue
        lines.append(
            f'<line x1="{sx(start["ts"]):.2f}" y1="{sy(a) + _LANE / 2:.1f}" '
            f'x2="{sx(event["ts"]):.2f}" y2="{sy(b) + _LANE / 2:.1f}" stroke="{ARROW}" '
            'stroke-width="1" stroke-opacity="0.7"/>'
        )
    return f'<g class="arrows" stroke="{GREY}">{"".join(lines)}</g>'
