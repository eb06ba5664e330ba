"""The ``--html`` report: one self-contained page, its structure, and how Chromium draws it.

Timelines are built by hand. The structure is checked with the stdlib's HTML
parser; where Chromium is installed (Debian's ``chromium``), the page is also
rendered headless: its DOM must hold the three charts, and its screenshot must
show them (a tiny PNG decoder below reads the pixels).
"""

from __future__ import annotations

import contextlib
import dataclasses
import html
import itertools
import json
import math
import os
import re
import shutil
import signal
import struct
import subprocess
import zlib
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from mpmarket.core.books import MarketBooks
from mpmarket.products import Coffee, Tea
from mpmarket.run.report import RunReport
from mpmarket.run.timeline import Sample, Timeline
from mpmarket.view import charts as html_report
from mpmarket.view.html import render_html
from mpmarket.view.summary import report_to_json

NASTY = '<b>&"'  # a name that breaks a page that forgets to escape
CHART_TITLES = ["Products on sale per producer", "Products bought per second", "Waiting consumers"]
LINDEN = Tea("Linden", 9, "Herbal")
ARABICA = Coffee("Arabica", 3, 5.02, "LIGHT")

VOID = {"meta", "br", "hr", "img", "input", "link", "area", "base", "col", "source", "wbr"}
SVG_SELF_CLOSING = {"line", "polyline", "polygon", "path", "rect", "circle"}


# -- data -------------------------------------------------------------------------


def make_timeline(producers: int = 3, seconds: float = 6.0, step: float = 0.25) -> Timeline:
    names = (NASTY, *(f"prod{i + 2}" for i in range(producers - 1)))
    consumers = ("cons1", NASTY, "cons3", "cons4")
    tl = Timeline(names, consumers, 4, 120, 12)
    count = int(seconds / step) + 1
    for k in range(count):
        t = k * step
        bought = min(120, round(20 * t))
        tl.samples.append(
            Sample(
                t=t,
                bought=bought,
                orders=bought // 10,
                consumers_done=min(4, int(t) // 2 + (bought == 120)),
                on_sale_per_producer=tuple((k + 3 * i) % 5 for i in range(producers)),
                waiting_consumers=max(0, 4 - int(t) // 2),
                waiting_producers=k % 3,
            )
        )
    return tl


def make_report(exit_code: int = 0, failures: tuple[str, ...] = ()) -> dict[str, Any]:
    report = RunReport(f"configs/{NASTY}.toml", 3, 4)
    report.orders = [("cons1", [LINDEN, ARABICA]), (NASTY, [LINDEN]), (NASTY, [ARABICA] * 3)]
    report.failures = list(failures)
    report.books = MarketBooks(
        queue_size_per_producer=4,
        producers=3,
        carts=4,
        published=130,
        on_sale=10,
        in_carts=0,
        ordered=120,
        orders=12,
        on_sale_per_producer=(4, 3, 3),
        sold_per_producer=(40, 40, 40),
        waiting_consumers=0,
        waiting_producers=2,
        closed=True,
    )
    report.startup_s, report.market_s, report.shutdown_s, report.wall_s = 0.05, 6.0, 0.2, 6.3
    return report_to_json(report, exit_code, ideal_s=5.7)


# -- a structural reader ----------------------------------------------------------


class Page(HTMLParser):
    """Reads the page: element counts, nesting, texts, and what each <svg> holds."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.counts: Counter[str] = Counter()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.attributes: list[tuple[str, str, str | None]] = []
        self.texts: list[str] = []
        self.title = ""
        self.svgs: list[dict[str, Any]] = []
        self.headings: list[str] = []
        self._heading: list[str] | None = None
        self.feed(text)
        self.close()
        if self.stack:
            self.errors.append(f"unclosed: {self.stack}")

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.counts[tag] += 1
        self.attributes += [(tag, name, value) for name, value in attrs]
        if tag == "svg":
            classes = (dict(attrs).get("class") or "").split()
            self.svgs.append({"title": None, "elements": Counter(), "texts": [], "class": classes})
        elif "svg" in self.stack:
            self.svgs[-1]["elements"][tag] += 1
        if tag == "h2":
            self._heading = []
        if tag not in VOID and not (tag in SVG_SELF_CLOSING and "svg" in self.stack):
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.counts[tag] += 1
        self.attributes += [(tag, name, value) for name, value in attrs]
        if "svg" in self.stack:
            self.svgs[-1]["elements"][tag] += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID or (tag in SVG_SELF_CLOSING and self.stack[-1:] != [tag]):
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:]}")
            return
        self.stack.pop()
        if tag == "h2" and self._heading is not None:
            self.headings.append("".join(self._heading))
            self._heading = None

    def handle_data(self, data: str) -> None:
        self.texts.append(data)
        if self._heading is not None:
            self._heading.append(data)
        if self.stack[-2:] == ["head", "title"]:
            self.title += data
        elif "svg" in self.stack:
            svg = self.svgs[-1]
            if self.stack[-2:] == ["svg", "title"]:
                svg["title"] = data
            elif self.stack[-1] == "text":
                svg["texts"].append(data)

    def charts(self, geometry: html_report.Geometry = html_report.WIDE) -> list[dict[str, Any]]:
        """The <svg> of each chart drawn for one width (``WIDE`` or ``NARROW``)."""
        return [svg for svg in self.svgs if geometry.name in svg["class"]]


# -- structure --------------------------------------------------------------------


def test_page_structure() -> None:
    text = render_html(make_report(), make_timeline())
    page = Page(text)
    assert page.errors == []
    assert text.startswith("<!DOCTYPE html>")
    for tag in ("html", "head", "body", "style"):
        assert page.counts[tag] == 1, tag
    assert page.title == f"mpmarket run: configs/{NASTY}.toml"
    assert len(page.svgs) == 6  # each chart drawn wide, and narrow for a phone
    for geometry in (html_report.WIDE, html_report.NARROW):
        titles = [svg["title"] for svg in page.charts(geometry)]
        assert titles == CHART_TITLES
    for title in CHART_TITLES:
        assert title in page.headings  # each chart has a heading too
    for svg in page.svgs:
        assert svg["elements"]["polyline"] >= 2  # the series are drawn
        assert svg["elements"]["line"] >= 10  # axes, ticks and grid
    for svg in page.charts(html_report.WIDE):
        assert {"0", "1", "2", "5", "6"} <= set(svg["texts"])  # x ticks every second
    for svg in page.charts(html_report.NARROW):
        assert {"0", "2", "4", "6"} <= set(svg["texts"])  # fewer on a phone
        assert "1" not in svg["texts"][:4]


def test_every_axis_is_labelled_with_its_unit() -> None:
    page = Page(render_html(make_report(), make_timeline()))
    y_labels = ["products on sale", "products or orders per s", "agents waiting"]
    for geometry in (html_report.WIDE, html_report.NARROW):
        for svg, y_label in zip(page.charts(geometry), y_labels, strict=True):
            texts = svg["texts"]
            assert "time since the start barrier (s)" in texts
            assert y_label in texts
            numbers = [t for t in texts if t.replace(".", "", 1).isdigit()]
            assert len(numbers) >= 3 + 2, texts  # ticks on both axes


def test_page_is_self_contained() -> None:
    text = render_html(make_report(), make_timeline())
    page = Page(text)
    assert page.counts["script"] == 0
    assert page.counts["link"] == 0
    assert page.counts["img"] == 0 and page.counts["iframe"] == 0
    assert not [a for a in page.attributes if a[1] in ("src", "href", "xlink:href")]
    for forbidden in ("http://", "https://", "//cdn", "@import", "url(", "@font-face"):
        assert forbidden not in text.lower()


def test_every_text_is_escaped() -> None:
    text = render_html(
        make_report(failures=(f"consumer {NASTY} failed: <i>boom</i>",)), make_timeline()
    )
    assert NASTY not in text
    assert "<i>" not in text
    assert "&lt;b&gt;&amp;&quot;" in text
    page = Page(text)
    assert page.errors == []
    assert page.counts["b"] == 0 and page.counts["i"] == 0
    seen = "".join(page.texts)
    assert f"consumer {NASTY} failed: <i>boom</i>" in seen  # shown, as text
    assert page.texts.count(NASTY) >= 3  # a legend, a series' <title>, a table row


def test_summary_shows_the_json_report() -> None:
    report = make_report()
    page = Page(render_html(report, make_timeline()))
    seen = " ".join(page.texts)
    assert "exit 0: success" in seen
    for expected in ("products bought", "120", "of 120 to buy", "6.000 s", "5.700 s", "95.0%"):
        assert expected in seen, expected
    for label in ("start-up", "shutdown", "wall time", "published", "in carts", "balanced"):
        assert label in seen, label
    # orders per consumer, from the report's orders
    rows = " | ".join(t.strip() for t in page.texts if t.strip())
    assert f"{NASTY} | 2 | 4" in rows
    assert "cons1 | 1 | 2" in rows


def test_a_failed_run_says_so() -> None:
    report = make_report(exit_code=1, failures=("producer prod2 died (killed by SIGKILL)",))
    seen = " ".join(Page(render_html(report, make_timeline())).texts)
    assert "exit 1: the run failed" in seen
    assert "Failures" in seen
    assert "producer prod2 died (killed by SIGKILL)" in seen
    report = make_report(exit_code=130)
    report["interrupted"] = True
    assert "exit 130: interrupted" in " ".join(Page(render_html(report, make_timeline())).texts)


def test_deaths_stalls_and_broken_invariants_are_shown() -> None:
    report = make_report(exit_code=1)
    report["deaths"] = [
        {
            "name": NASTY,
            "role": "consumer",
            "how": "was killed by SIGKILL",
            "sessions_done": 1,
            "sessions": 3,
            "released": 2,
        }
    ]
    report["stall"] = ["stalled: no consumer made progress for 5.0 s", f"{NASTY} waits for <x>"]
    report["violations"] = ["at 1.00 s: published != on sale + in carts + ordered"]
    report["market_lost"] = True
    report["cut_short"] = True
    text = render_html(report, make_timeline())
    page = Page(text)
    assert page.errors == []
    seen = " | ".join(t.strip() for t in page.texts if t.strip())
    for expected in (
        "Agents lost",
        f"consumer {NASTY} | was killed by SIGKILL | 1 of 3 | 2",
        "Stalled",
        f"stalled: no consumer made progress for 5.0 s\n{NASTY} waits for <x>",
        "Broken invariants",
        "at 1.00 s: published != on sale + in carts + ordered",
        "The market was lost during the run.",
        "The run was stopped at its deadline.",
    ):
        assert expected in seen, expected
    assert "<x>" not in text


def test_few_producers_get_a_line_each() -> None:
    page = Page(render_html(make_report(), make_timeline(producers=3)))
    legend = " ".join(page.texts)
    for name in (NASTY, "prod2", "prod3", "cap (4)"):
        assert name in legend
    for svg in page.svgs[:2]:  # the on-sale chart, wide and narrow
        assert svg["elements"]["polyline"] == 3 + 1  # one per producer, and the cap


def test_many_producers_get_an_aggregate_and_the_busiest() -> None:
    tl = make_timeline(producers=40)
    text = render_html(make_report(), tl)
    page = Page(text)
    seen = " ".join(page.texts)
    assert "mean of 40 producers" in seen
    assert "min to max of 40 producers" in seen
    totals = [sum(s.on_sale_per_producer[i] for s in tl.samples) for i in range(40)]
    ranked = sorted(range(40), key=lambda i: (-totals[i], i))
    for i in ranked[: html_report.TOP_PRODUCERS]:
        assert f">{html.escape(tl.producers[i])}<" in text
    for i in ranked[html_report.TOP_PRODUCERS :]:
        assert f">{html.escape(tl.producers[i])}<" not in text
    # mean + top three + cap as lines, the band as a polygon
    for svg in page.svgs[:2]:
        assert svg["elements"]["polyline"] == 1 + html_report.TOP_PRODUCERS + 1
        assert svg["elements"]["polygon"] == 1


def test_no_samples_still_makes_a_page() -> None:
    tl = make_timeline()
    tl.samples.clear()
    page = Page(render_html(make_report(), tl))
    assert page.errors == []
    assert len(page.svgs) == 6
    for svg in page.svgs:
        assert "not enough samples to draw" in svg["texts"]
        assert svg["elements"]["polyline"] == 0


def test_a_partial_json_report_is_enough() -> None:
    page = Page(render_html({"exit_code": 2}, make_timeline()))
    assert page.errors == []
    assert len(page.svgs) == 6


def test_the_time_axis_ends_with_the_last_sample() -> None:
    tl = make_timeline(seconds=6.2, step=0.1)
    page = Page(render_html(make_report(), tl))
    for svg in page.svgs:
        ticks = [t for t in svg["texts"] if t.replace(".", "").isdigit()]
        assert "6" in ticks and "7" not in ticks


def test_ticks_are_round() -> None:
    assert html_report._ticks(6.2, target=8) == [0, 1, 2, 3, 4, 5, 6, 7]
    assert html_report._ticks(12, integer=True) == [0, 3, 6, 9, 12]
    assert html_report._ticks(0.3, integer=True) == [0, 1]
    assert html_report._ticks(230) == [0, 50, 100, 150, 200, 250]
    assert html_report._ticks(0) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]


def test_big_ticks_count_in_thousands() -> None:
    assert html_report._tick_label(15_000, thousands=True) == "15k"
    assert html_report._tick_label(2_500, thousands=True) == "2.5k"
    assert html_report._tick_label(0, thousands=True) == "0"
    tl = make_timeline()
    tl.samples = [dataclasses.replace(s, bought=round(15_000 * s.t)) for s in tl.samples]
    for svg in Page(render_html(make_report(), tl)).svgs[2:4]:  # the rate chart
        assert {"0", "5k", "10k", "15k"} <= set(svg["texts"])
        assert "15000" not in svg["texts"]


def test_rates_over_a_trailing_window() -> None:
    times = [0.0, 0.5, 1.0, 1.5, 2.0, 4.0]
    bought = [0, 10, 20, 20, 20, 30]
    assert html_report._trailing_rates(times, bought) == [0.0, 20.0, 20.0, 10.0, 0.0, 5.0]


# -- colours a colour-blind reader tells apart --------------------------------------

# Machado, Oliveira & Fernandes (2009), severity 1.0: linear-RGB matrices that
# show what a protanope, a deuteranope and a tritanope see.
CVD_MATRICES = {
    "protanopia": (
        (0.152286, 1.052583, -0.204868),
        (0.114503, 0.786281, 0.099216),
        (-0.003882, -0.048116, 1.051998),
    ),
    "deuteranopia": (
        (0.367322, 0.860646, -0.227968),
        (0.280085, 0.672501, 0.047413),
        (-0.011820, 0.042940, 0.968881),
    ),
    "tritanopia": (
        (1.255528, -0.076749, -0.178779),
        (-0.078411, 0.930809, 0.147602),
        (0.004733, 0.691367, 0.303900),
    ),
}
# Two series of one chart must differ by at least this CIELAB distance as each
# of those readers sees them (Tableau 10, the page's former palette, drew its
# red and green lines 0.9 apart for a deuteranope).
MIN_DELTA_E = 15.0


def _lab_seen(colour: str, matrix: tuple[tuple[float, ...], ...]) -> tuple[float, float, float]:
    """The CIELAB colour of ``colour`` (#rrggbb) as seen through ``matrix``."""
    srgb = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    rgb = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in srgb]
    r, g, b = (
        min(1.0, max(0.0, sum(m * c for m, c in zip(row, rgb, strict=True)))) for row in matrix
    )
    xyz = (
        (0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047,
        0.2126 * r + 0.7152 * g + 0.0722 * b,
        (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883,
    )
    fx, fy, fz = (t ** (1 / 3) if t > 216 / 24389 else (24389 / 27 * t + 16) / 116 for t in xyz)
    return 116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)


def _series_colours(svg_text: str) -> list[str]:
    """The stroke colours of the series lines of one drawn chart, reference lines aside."""
    return [
        re.findall(r'stroke="(#[0-9a-f]{6})"', tag)[0]
        for tag in re.findall(r"<polyline [^>]*>", svg_text)
        if "stroke-dasharray" not in tag
    ]


def test_chart_colours_are_okabe_ito() -> None:
    allowed = {*html_report.OKABE_ITO.values(), html_report.GREY}
    for producers in (3, html_report.MAX_PRODUCER_LINES, 40):
        text = render_html(make_report(), make_timeline(producers=producers))
        svgs = text[text.index("<svg") :]
        used = set(re.findall(r'(?:stroke|fill|background): ?"?(#[0-9a-fA-F]{6})', svgs))
        assert used and used <= allowed, used - allowed


@pytest.mark.parametrize("deficiency", sorted(CVD_MATRICES))
def test_series_of_a_chart_stay_apart_for_a_colour_blind_reader(deficiency: str) -> None:
    matrix = CVD_MATRICES[deficiency]
    text = render_html(make_report(), make_timeline(producers=html_report.MAX_PRODUCER_LINES))
    charts = re.findall(r'<svg class="chart wide".*?</svg>', text, re.S)
    assert len(charts) == 3
    for chart in charts:
        colours = sorted(set(_series_colours(chart)))
        assert len(colours) >= 2
        for a, b in itertools.combinations(colours, 2):
            distance = math.dist(_lab_seen(a, matrix), _lab_seen(b, matrix))
            assert distance >= MIN_DELTA_E, f"{a} and {b}: {distance:.1f} apart"


def test_the_colour_blind_check_has_teeth() -> None:
    red, green = "#e15759", "#59a14f"  # Tableau 10's
    seen = [_lab_seen(c, CVD_MATRICES["deuteranopia"]) for c in (red, green)]
    assert math.dist(*seen) < MIN_DELTA_E


# -- rendered by Chromium ----------------------------------------------------------

CHROMIUM = shutil.which("chromium")
CHROMIUM_TIMEOUT_S = 60.0
WINDOW = (1200, 2200)
PHONE, DESKTOP = 390, 1280  # CSS pixels: a common phone's width, a laptop's
MIN_CHART_TEXT_PX = 10.0  # the smallest text a chart may draw, as shown

# A name no line can break: the page must wrap it, never widen for it.
LONG = "a_producer_whose_name_runs_on_and_on_without_a_single_break_0123456789"

# Headless Chromium draws no window narrower than 500 px: the page is shown in
# a frame of the exact width (``framed``). A script added to that copy of the
# page (the page itself has none) measures the layout as Chromium drew it and
# writes the result into the frame's parent, which --dump-dom prints. Reported: elements sticking out of the window or of their
# own box, the charts shown, their smallest text in CSS pixels, texts outside
# their chart, and texts of one chart drawn over each other.
LAYOUT_SCRIPT = """
<script>
(function () {
  const width = document.documentElement.clientWidth;
  const name = (el) => el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") +
    (el.className && el.className.baseVal === undefined && el.className ? "." + el.className : "") +
    " '" + (el.textContent || "").trim().slice(0, 40) + "'";
  const result = {width: width, pageWidth: document.documentElement.scrollWidth,
    outside: [], overflowing: [], shown: [], charts: [], minTextPx: 1e9, textOutside: [], overlaps: []};
  for (const el of document.body.querySelectorAll("*")) {
    if (el.closest("svg") || el.getClientRects().length === 0) continue;
    const box = el.getBoundingClientRect();
    if (box.left < -0.5 || box.right > width + 0.5) result.outside.push(name(el));
    const style = getComputedStyle(el);
    if (el.clientWidth > 0 && style.overflowX === "visible" && el.scrollWidth > el.clientWidth + 1)
      result.overflowing.push(name(el));
  }
  for (const svg of document.querySelectorAll("svg.chart")) {
    if (svg.getClientRects().length === 0) continue;
    result.shown.push(svg.id);
    result.charts.push([svg.querySelector("title").textContent,
      svg.querySelectorAll("polyline").length]);
    const frame = svg.getBoundingClientRect();
    const scale = frame.width / svg.viewBox.baseVal.width;
    const boxes = [];
    for (const text of svg.querySelectorAll("text")) {
      const px = parseFloat(getComputedStyle(text).fontSize) * scale;
      result.minTextPx = Math.min(result.minTextPx, px);
      const b = text.getBoundingClientRect();
      if (b.left < frame.left - 0.5 || b.right > frame.right + 0.5 ||
          b.top < frame.top - 0.5 || b.bottom > frame.bottom + 0.5)
        result.textOutside.push(svg.id + ": " + text.textContent);
      for (const [other, o] of boxes) {
        if (b.left < o.right - 1 && o.left < b.right - 1 && b.top < o.bottom - 1 && o.top < b.bottom - 1)
          result.overlaps.push(svg.id + ": '" + text.textContent + "' over '" + other + "'");
      }
      boxes.push([text.textContent, b]);
    }
  }
  const out = parent.document.createElement("pre");
  out.id = "layout-check";
  out.textContent = JSON.stringify(result);
  parent.document.body.appendChild(out);
})();
</script>
"""


def framed(page: str, width: int, height: int) -> str:
    """A page showing ``page`` in a frame ``width`` CSS pixels wide, its viewport that wide."""
    return (
        '<!DOCTYPE html><html><body style="margin: 0">'
        f'<iframe style="display: block; border: 0; width: {width}px; height: {height}px" '
        f'srcdoc="{html.escape(page, quote=True)}"></iframe></body></html>'
    )


@pytest.fixture
def chromium_ok() -> None:
    """Skip without Chromium; under CI=true (as .ci/run sets) fail instead: CI installs it."""
    if CHROMIUM is not None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail("CI=true and chromium is not installed: .ci/run installs it (apt-get)")
    pytest.skip("chromium is not installed (apt-get install -y chromium)")


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium with a timeout; kill its whole process group, always."""
    assert CHROMIUM is not None
    profile = tmp_path / f"profile-{len(list(tmp_path.iterdir()))}"
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-crash-reporter",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        *args,
    ]
    env = {**os.environ, "HOME": str(tmp_path)}
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,  # its own process group: its helpers die with it
    )
    try:
        stdout, stderr = process.communicate(timeout=CHROMIUM_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(f"chromium took more than {CHROMIUM_TIMEOUT_S:.0f} s: {command}")
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)  # helpers still around, if any
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and RGB pixels of an 8-bit RGB/RGBA non-interlaced PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, []
    width = height = colour_type = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and colour_type in (2, 6) and interlace == 0, body
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    raw = zlib.decompress(b"".join(idat))
    bpp = 3 if colour_type == 2 else 4
    stride = width * bpp
    prev = bytearray(stride)
    pixels: list[bytes] = []
    for row in range(height):
        start = row * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        if kind == 1:  # Sub
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 255
        elif kind == 2:  # Up
            line = bytearray((a + b) & 255 for a, b in zip(line, prev, strict=True))
        elif kind == 3:  # Average
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 255
        elif kind == 4:  # Paeth
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b = prev[i]
                c = prev[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        pixels += [bytes(line[i : i + 3]) for i in range(0, stride, bpp)]
        prev = line
    return width, height, pixels


def near(colour: str, counts: Counter[bytes], tolerance: int = 12) -> int:
    """How many pixels are within ``tolerance`` of ``colour`` (#rrggbb) on every channel."""
    target = bytes.fromhex(colour[1:])
    return sum(
        n
        for pixel, n in counts.items()
        if all(abs(p - t) <= tolerance for p, t in zip(pixel, target, strict=True))
    )


def layout_report() -> str:
    """A page with everything that could widen it: long names, failures, deaths, a
    stall, and a stress run's rates (five-digit ticks)."""
    report = make_report(exit_code=1, failures=(f"consumer {LONG} failed: {LONG * 2}",))
    report["orders"].append({"consumer": LONG, "products": [{"name": LONG}]})
    report["deaths"] = [
        {"name": LONG, "role": "producer", "how": "was killed by SIGKILL", "sessions": 3}
    ]
    report["stall"] = [f"{LONG} waits for {LONG}"]
    report["source"] = f"configs/{LONG}/{LONG}.toml"
    timeline = make_timeline(seconds=30)
    timeline.samples = [
        dataclasses.replace(s, bought=round(15_000 * s.t), orders=round(4_000 * s.t))
        for s in timeline.samples
    ]
    timeline.producers = (LONG, *timeline.producers[1:])
    timeline.consumers = (*timeline.consumers, LONG)
    return render_html(report, timeline)


@pytest.mark.parametrize("width", [PHONE, DESKTOP])
def test_chromium_lays_the_page_out(tmp_path: Path, width: int, chromium_ok: None) -> None:
    page = tmp_path / "report.html"
    measured = layout_report().replace("</body>", LAYOUT_SCRIPT + "</body>", 1)
    page.write_text(framed(measured, width, 2000), encoding="utf-8")
    dom = chromium(tmp_path, f"--window-size={width},2000", "--dump-dom", page.as_uri()).stdout
    found = re.search(r'<pre id="layout-check">(.*?)</pre>', dom, re.S)
    assert found, f"the layout script did not run: {dom[-500:]}"
    result = json.loads(html.unescape(found.group(1)))
    assert result["width"] == width
    assert result["pageWidth"] <= width, "the page scrolls sideways"
    assert result["outside"] == [], "out of the window"
    assert result["overflowing"] == [], "text spills out of its box"
    geometry = html_report.NARROW if width == PHONE else html_report.WIDE
    suffix = "" if geometry is html_report.WIDE else f"-{geometry.name}"
    assert result["shown"] == [f"{chart}{suffix}" for chart in ("on-sale", "bought", "waiting")]
    assert result["minTextPx"] >= MIN_CHART_TEXT_PX, "chart text too small to read"
    assert result["textOutside"] == [], "chart text cut off"
    assert result["overlaps"] == [], "chart texts drawn over each other"
    assert [title for title, _ in result["charts"]] == CHART_TITLES
    assert all(lines >= 2 for _, lines in result["charts"]), "series not drawn"


def test_chromium_draws_the_charts(tmp_path: Path, chromium_ok: None) -> None:
    page = tmp_path / "report.html"
    text = render_html(make_report(), make_timeline(seconds=30))
    page.write_text(text, encoding="utf-8")
    png = tmp_path / "report.png"
    chromium(
        tmp_path, f"--screenshot={png}", f"--window-size={WINDOW[0]},{WINDOW[1]}", page.as_uri()
    )
    assert png.is_file(), "no screenshot"
    width, height, pixels = png_pixels(png.read_bytes())
    assert (width, height) == WINDOW
    counts = Counter(pixels)
    assert len(counts) > 100, "a blank page"
    wide = re.findall(r'<svg class="chart wide".*?</svg>', text, re.S)
    for chart, title in zip(wide, CHART_TITLES, strict=True):
        for colour in _series_colours(chart):
            assert near(colour, counts) > 300, f"{title}: {colour} not drawn"
