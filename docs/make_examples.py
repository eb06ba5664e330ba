"""Make the pictures of the README and docs/usage.md: docs/report-example.png,
docs/report-phone.png, docs/report-desktop.png and docs/live-view.txt.

A real run, in one process: the agent loops (``agents.produce`` and
``agents.consume``) in threads against a ``Marketplace``, its books sampled
every 0.1 s into a ``Timeline``, as the runner samples a run's market. The
HTML report of that run is rendered and screenshotted with headless Chromium
(its charts alone; the charts at a phone's width; the top of the page at a
desktop's);
the live view is captured part-way through the run at width 100.

    .venv/bin/python docs/make_examples.py [--keep-html PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import html
import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from rich.console import Console

from mpmarket.core.agents import consume, produce
from mpmarket.core.generate import generate
from mpmarket.core.market import Marketplace
from mpmarket.core.simulate import simulate
from mpmarket.errors import MarketClosedError
from mpmarket.products import Product
from mpmarket.run.report import RunReport
from mpmarket.run.timeline import Sample, Timeline
from mpmarket.view.html import render_html
from mpmarket.view.live import format_live
from mpmarket.view.summary import report_to_json

DOCS = Path(__file__).resolve().parent
SAMPLE_EVERY_S = 0.1
JOIN_S = 10.0
CHROMIUM_TIMEOUT_S = 60.0
HIDE_SUMMARY = ".cards, section.summary { display: none; }"
# The page as a phone (390 CSS px: the charts) and a desktop (1280: the top of
# the page, the summary and the first chart) show it: width, height.
PHONE = (390, 1440)
DESKTOP = (1280, 1180)


def run_in_threads() -> tuple[dict, Timeline]:
    """Run a generated workload in threads; return its JSON report and timeline."""
    workload = generate(6, 12, sessions=20, seed=7, queue_size=6, make_time=0.025, wait_time=0.01)
    timeline = Timeline(
        producers=tuple(p.name for p in workload.producers),
        consumers=tuple(c.name for c in workload.consumers),
        queue_size_per_producer=workload.queue_size_per_producer,
        products_to_buy=workload.products_to_buy,
        sessions_to_run=workload.sessions,
    )
    market = Marketplace(workload.queue_size_per_producer)
    stop = threading.Event()
    report = RunReport("generated: 6 producers, 12 consumers, 20 sessions, seed 7", 6, 12)
    lock = threading.Lock()
    done = [0]

    def deliver(consumer: str, products: list[Product]) -> None:
        with lock:
            report.orders.append((consumer, products))

    def producer(spec) -> None:  # type: ignore[no-untyped-def]
        with contextlib.suppress(MarketClosedError):  # the normal end of a producer
            produce(market, spec, stop)

    def consumer(spec) -> None:  # type: ignore[no-untyped-def]
        consume(market, spec, deliver, stop)
        with lock:
            done[0] += 1

    started = time.perf_counter()
    threads = [
        threading.Thread(target=producer, args=(s,), daemon=True) for s in workload.producers
    ]
    consumers = [
        threading.Thread(target=consumer, args=(s,), daemon=True) for s in workload.consumers
    ]
    for thread in threads + consumers:
        thread.start()
    barrier = time.perf_counter()
    while True:
        books = market.books()
        with lock:
            finished = done[0]
        timeline.samples.append(
            Sample(
                t=time.perf_counter() - barrier,
                bought=books.ordered,
                orders=books.orders,
                consumers_done=finished,
                on_sale_per_producer=books.on_sale_per_producer,
                waiting_consumers=books.waiting_consumers,
                waiting_producers=books.waiting_producers,
            )
        )
        if finished == len(consumers):
            break
        time.sleep(SAMPLE_EVERY_S)
    market_end = time.perf_counter()
    report.books = market.books()
    stop.set()
    market.close()
    for thread in threads + consumers:
        thread.join(JOIN_S)
    ended = time.perf_counter()
    report.startup_s = barrier - started
    report.market_s = market_end - barrier
    report.shutdown_s = ended - market_end
    report.wall_s = ended - started
    ideal = simulate(workload).makespan
    return report_to_json(report, 0, ideal), timeline


def framed(page: str, width: int, height: int) -> str:
    """``page`` in a frame ``width`` CSS px wide: headless Chromium draws no window under 500 px."""
    return (
        '<!DOCTYPE html><html><body style="margin: 0">'
        f'<iframe style="display: block; border: 0; width: {width}px; height: {height}px" '
        f'srcdoc="{html.escape(page, quote=True)}"></iframe></body></html>'
    )


def screenshot(html_path: Path, png_path: Path, width: int, height: int) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        sys.exit("chromium not found: apt-get install -y chromium")
    with tempfile.TemporaryDirectory() as profile:
        command = [
            chromium,
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
            f"--screenshot={png_path}",
            f"--window-size={width},{height}",
            html_path.as_uri(),
        ]
        process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        try:
            process.wait(CHROMIUM_TIMEOUT_S)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # helpers left behind, if any
            process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep-html", type=Path, help="also save the HTML report here")
    args = parser.parse_args()

    report, timeline = run_in_threads()
    page = render_html(report, timeline)
    if args.keep_html:
        args.keep_html.write_text(page, encoding="utf-8")

    # The live view as it looked 40 % into the run.
    partial = Timeline(
        timeline.producers,
        timeline.consumers,
        timeline.queue_size_per_producer,
        timeline.products_to_buy,
        timeline.sessions_to_run,
        timeline.samples[: max(2, len(timeline.samples) * 2 // 5)],
    )
    console = Console(
        record=True, width=100, force_terminal=True, color_system=None, file=io.StringIO()
    )
    console.print(format_live(partial, partial.samples[-1].t + report["timings"]["startup_s"]))
    text = "\n".join(line.rstrip() for line in console.export_text().splitlines()) + "\n"
    (DOCS / "live-view.txt").write_text(text, encoding="utf-8")

    # The charts only: the page with its summary cards and tables hidden.
    charts_only = page.replace("</head>", f"<style>{HIDE_SUMMARY}</style></head>", 1)
    with tempfile.TemporaryDirectory() as tmp:
        html_path = Path(tmp) / "report.html"
        html_path.write_text(charts_only, encoding="utf-8")
        screenshot(html_path, DOCS / "report-example.png", 1000, 1270)
        for name, shown, (width, height) in (
            ("phone", charts_only, PHONE),
            ("desktop", page, DESKTOP),
        ):
            html_path.write_text(framed(shown, width, height), encoding="utf-8")
            screenshot(html_path, DOCS / f"report-{name}.png", width, height)
    print(f"{len(timeline.samples)} samples, {report['products_bought']} bought")
    print(f"wrote {DOCS / 'live-view.txt'} and docs/report-{{example,phone,desktop}}.png")


if __name__ == "__main__":
    main()
