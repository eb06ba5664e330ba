"""The ``--html`` report: one self-contained page, its structure, and how Chromium draws it.

Timelines are built by hand. The structure is checked with the stdlib's HTML
parser; where Chromium is installed (Debian's ``chromium``), the page is also
rendered headless: its DOM must hold the three charts, and its screenshot must
show them (a tiny PNG decoder below reads the pixels).
"""

from __future__ import annotations

import contextlib
import html
import os
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
            self.svgs.append({"title": None, "elements": Counter(), "texts": []})
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


# -- structure --------------------------------------------------------------------


def test_page_structure() -> None:
    text = render_html(make_report(), make_timeline())
    page = Page(text)
    assert page.errors == []
    assert text.startswith("<!DOCTYPE html>")
    for tag in ("html", "head", "body", "style"):
        assert page.counts[tag] == 1, tag
    assert page.title == f"mpmarket run: configs/{NASTY}.toml"
    assert len(page.svgs) == 3
    titles = [svg["title"] for svg in page.svgs]
    assert titles == [
        "Products on sale per producer",
        "Products bought per second",
        "Waiting consumers",
    ]
    for title in titles:
        assert title in page.headings  # each chart has a heading too
    for svg in page.svgs:
        assert svg["elements"]["polyline"] >= 2  # the series are drawn
        assert svg["elements"]["line"] >= 10  # axes, ticks and grid
        assert "time since the start barrier (s)" in svg["texts"]
        assert {"0", "1", "2", "5", "6"} <= set(svg["texts"])  # x ticks every second


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
    assert page.svgs[0]["elements"]["polyline"] == 3 + 1  # one per producer, and the cap


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
    assert page.svgs[0]["elements"]["polyline"] == 1 + html_report.TOP_PRODUCERS + 1
    assert page.svgs[0]["elements"]["polygon"] == 1


def test_no_samples_still_makes_a_page() -> None:
    tl = make_timeline()
    tl.samples.clear()
    page = Page(render_html(make_report(), tl))
    assert page.errors == []
    assert len(page.svgs) == 3
    for svg in page.svgs:
        assert "not enough samples to draw" in svg["texts"]
        assert svg["elements"]["polyline"] == 0


def test_a_partial_json_report_is_enough() -> None:
    page = Page(render_html({"exit_code": 2}, make_timeline()))
    assert page.errors == []
    assert len(page.svgs) == 3


def test_the_time_axis_ends_with_the_last_sample() -> None:
    tl = make_timeline(seconds=6.2, step=0.1)
    page = Page(render_html(make_report(), tl))
    ticks = [t for t in page.svgs[1]["texts"] if t.replace(".", "").isdigit()]
    assert "6" in ticks and "7" not in ticks


def test_ticks_are_round() -> None:
    assert html_report._ticks(6.2, target=8) == [0, 1, 2, 3, 4, 5, 6, 7]
    assert html_report._ticks(12, integer=True) == [0, 3, 6, 9, 12]
    assert html_report._ticks(0.3, integer=True) == [0, 1]
    assert html_report._ticks(230) == [0, 50, 100, 150, 200, 250]
    assert html_report._ticks(0) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]


def test_rates_over_a_trailing_window() -> None:
    times = [0.0, 0.5, 1.0, 1.5, 2.0, 4.0]
    bought = [0, 10, 20, 20, 20, 30]
    assert html_report._trailing_rates(times, bought) == [0.0, 20.0, 20.0, 10.0, 0.0, 5.0]


# -- rendered by Chromium ----------------------------------------------------------

CHROMIUM = shutil.which("chromium")
CHROMIUM_TIMEOUT_S = 60.0
WINDOW = (1200, 2200)


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


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_chromium_draws_the_charts(tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    page.write_text(render_html(make_report(), make_timeline(seconds=30)), encoding="utf-8")

    dom = chromium(tmp_path, "--dump-dom", page.as_uri()).stdout
    parsed = Page(dom)
    assert len(parsed.svgs) == 3
    assert [svg["title"] for svg in parsed.svgs] == [
        "Products on sale per producer",
        "Products bought per second",
        "Waiting consumers",
    ]
    for svg in parsed.svgs:
        assert svg["elements"]["polyline"] >= 2

    png = tmp_path / "report.png"
    chromium(
        tmp_path, f"--screenshot={png}", f"--window-size={WINDOW[0]},{WINDOW[1]}", page.as_uri()
    )
    assert png.is_file(), "no screenshot"
    width, height, pixels = png_pixels(png.read_bytes())
    assert (width, height) == WINDOW
    counts = Counter(pixels)
    assert len(counts) > 100, "a blank page"
    palette = html_report.PALETTE
    for name, colour in (
        ("producer lines", palette[0]),
        ("products per second", palette[3]),
        ("waiting consumers", palette[1]),
        ("waiting producers", palette[2]),
    ):
        assert near(colour, counts) > 300, f"{name} ({colour}) not drawn"
