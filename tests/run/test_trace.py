"""``--trace``: the run as Trace Event JSON, checked as a viewer would read it.

Structure (metadata, complete events, flows, counters), spans that nest on
each track (never overlap in part), flows whose two ends sit in the spans
they join, and counts that match the run's own report.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from mpmarket.core.market import HANDOFF, Marketplace
from mpmarket.core.tracing import Recorder
from mpmarket.products import Tea
from mpmarket.run.trace import WAITS, parse_handoff
from mpmarket.view.lanes import MAX_LANES, WAIT, swim_lanes
from tests.helpers import run_cli
from tests.view.test_html import chromium, chromium_ok, near, png_pixels  # noqa: F401

EPS_US = 0.002  # ts and dur are rounded to the nanosecond (0.001 us)

# A consumer that must wait: one unit on sale at a time, each made in 0.3 s,
# so its add of 3 gets at least the last units handed over by publishes.
WAITING_WORKLOAD = """
[market]
queue_size_per_producer = 1

[products]
linden = { kind = "Tea", name = "Linden", price = 9, type = "Herbal" }

[[producers]]
name = "slow-maker"
republish_wait_time = 0.01
make = [{ product = "linden", quantity = 1, time = 0.3 }]

[[consumers]]
name = "patient"
retry_wait_time = 0.01
sessions = [
  [{ add = "linden", quantity = 3 }],
  [{ add = "linden", quantity = 1 }, { remove = "linden" }, { add = "linden", quantity = 1 }],
]
"""


def check_trace(trace: dict[str, Any]) -> dict[tuple[int, int], list[dict[str, Any]]]:
    """Assert what a viewer needs; return the spans by track (pid, tid)."""
    assert isinstance(trace["traceEvents"], list)
    events = trace["traceEvents"]
    for event in events:
        assert event["ph"] in {"M", "X", "s", "f", "C"}, event
        assert isinstance(event["pid"], int) and isinstance(event["tid"], int)
        assert isinstance(event["name"], str)
        if event["ph"] != "M":
            assert isinstance(event["ts"], int | float) and event["ts"] >= -EPS_US, event
    threads = {
        (e["pid"], e["tid"]): e["args"]["name"]
        for e in events
        if e["ph"] == "M" and e["name"] == "thread_name"
    }
    processes = {e["pid"] for e in events if e["ph"] == "M" and e["name"] == "process_name"}
    tracks: dict[tuple[int, int], list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        if event["ph"] == "X":
            assert event["dur"] >= 0 and event["cat"] in {"work", "wait", "session"}
            assert (event["cat"] == "wait") == (event["name"] in WAITS)
            track = (event["pid"], event["tid"])
            assert track in threads and event["pid"] in processes
            tracks[track].append(event)
    # Spans nest: on one track, two spans are apart or one holds the other.
    for spans in tracks.values():
        spans.sort(key=lambda e: (e["ts"], -e["dur"]))
        open_ends: list[float] = []
        for span in spans:
            start, end = span["ts"], span["ts"] + span["dur"]
            while open_ends and open_ends[-1] <= start + EPS_US:
                open_ends.pop()
            if open_ends:
                assert end <= open_ends[-1] + EPS_US, f"{span} overlaps its neighbour"
            open_ends.append(end)
    # Flows connect: one start and one finish per id, each inside a span of its track.
    starts = {e["id"]: e for e in events if e["ph"] == "s"}
    finishes = {e["id"]: e for e in events if e["ph"] == "f"}
    assert len(starts) == sum(e["ph"] == "s" for e in events)
    assert len(finishes) == sum(e["ph"] == "f" for e in events)
    assert starts.keys() == finishes.keys()
    for ident, start in starts.items():
        finish = finishes[ident]
        assert finish["bp"] == "e" and finish["ts"] >= start["ts"] - EPS_US
        assert _inside(tracks, start, {"publish", "publish blocked", "remove"})
        assert _inside(tracks, finish, {"add", "add waiting"})
    assert trace["otherData"]["flows"] == len(starts)
    return tracks


def _inside(tracks: dict[tuple[int, int], list[dict[str, Any]]], point: dict, names: set) -> bool:
    return any(
        span["name"] in names
        and span["ts"] - EPS_US <= point["ts"] <= span["ts"] + span["dur"] + EPS_US
        for span in tracks[(point["pid"], point["tid"])]
    )


def _names(tracks: dict[tuple[int, int], list[dict[str, Any]]]) -> Counter[str]:
    return Counter(span["name"] for spans in tracks.values() for span in spans)


def _run_traced(tmp_path: Path, *args: str | Path) -> tuple[dict, dict, str]:
    trace_path, json_path, html_path = (tmp_path / n for n in ("t.json", "r.json", "r.html"))
    result = run_cli(
        "run", *args, "-q", "--trace", trace_path, "--json", json_path, "--html", html_path
    )
    assert result.returncode == 0, result.stderr
    return (
        json.loads(trace_path.read_text()),
        json.loads(json_path.read_text()),
        html_path.read_text(),
    )


def _check_counts(tracks: dict, report: dict) -> None:
    """The spans' counts are the run's: orders, sessions, units published."""
    names = _names(tracks)
    assert names["order"] == len(report["orders"]) == names["session"]
    published = sum(a.get("published", 0) for a in report["agents"] if a["role"] == "producer")
    assert names["publish"] + names["publish blocked"] == published
    assert names["make"] <= published


def test_course_case_04_trace_matches_the_run(tmp_path, conformance_dir):
    trace, report, page = _run_traced(tmp_path, conformance_dir / "04.in")
    tracks = check_trace(trace)
    _check_counts(tracks, report)
    agents = {a["name"] for a in report["agents"]}
    threads = {e["args"]["name"] for e in trace["traceEvents"] if e["name"] == "thread_name"}
    assert threads == agents
    other = trace["otherData"]
    assert other["handoffs"] == other["flows"] and other["handoffs_without_spans"] == 0
    assert other["agents_without_spans"] == [] and other["spans_dropped"] == {}
    counters = {e["name"] for e in trace["traceEvents"] if e["ph"] == "C"}
    assert counters == {"units on sale", "waiting"}
    assert 'id="lanes"' in page and all(f">{name}</text>" in page for name in agents)


def test_a_waiting_add_gets_arrows_from_the_publishes_that_filled_it(tmp_path):
    config = tmp_path / "waiting.toml"
    config.write_text(WAITING_WORKLOAD)
    trace, report, _ = _run_traced(tmp_path, config)
    tracks = check_trace(trace)
    _check_counts(tracks, report)
    names = _names(tracks)
    assert names["add waiting"] >= 1 and names["remove"] == 1
    assert trace["otherData"]["flows"] >= 1
    assert trace["otherData"]["handoffs_without_spans"] == 0


def test_a_run_with_its_own_operation_log_takes_the_arrows_from_it(tmp_path):
    config, log = tmp_path / "waiting.toml", tmp_path / "operations.log"
    config.write_text(WAITING_WORKLOAD)
    trace, report, _ = _run_traced(tmp_path, config, "--log-file", log)
    _check_counts(check_trace(trace), report)
    handed = [line for line in log.read_text().splitlines() if parse_handoff(line)]
    assert len(handed) == trace["otherData"]["handoffs"] == trace["otherData"]["flows"] >= 1


def test_a_generated_run_with_packed_agents(tmp_path):
    trace, report, _ = _run_traced(
        tmp_path,
        "--producers",
        "3",
        "--consumers",
        "5",
        "--sessions",
        "3",
        "--agents-per-process",
        "2",
    )
    _check_counts(check_trace(trace), report)
    assert trace["otherData"]["spans_dropped"] == {}


def test_stress_trace(tmp_path):
    trace_path = tmp_path / "stress-trace.json"
    result = run_cli(
        "stress",
        "--producers",
        "2",
        "--consumers",
        "3",
        "--duration",
        "1",
        "-q",
        "--trace",
        trace_path,
    )
    assert result.returncode == 0, result.stderr
    tracks = check_trace(json.loads(trace_path.read_text()))
    assert _names(tracks)["order"] > 0


@pytest.mark.parametrize("level", [HANDOFF, logging.INFO])
def test_the_market_logs_which_publish_filled_which_waiting_cart(level):
    """At INFO as they happen; at HANDOFF (--trace's log) kept till the close."""
    records: list[logging.LogRecord] = []
    logger = logging.getLogger(f"test_trace.handoffs.{level}")
    logger.setLevel(level)
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    try:
        market = Marketplace(1, logger=logger)
        producer, cart = market.register_producer(), market.new_cart()
        tea = Tea("Linden", 9, "Herbal")
        got: list[int] = []
        waiter = threading.Thread(target=lambda: got.append(market.add_many(cart, tea, 2, 30.0)))
        waiter.start()
        while not market.snapshot().waiting_consumers:
            threading.Event().wait(0.01)
        assert market.publish(producer, tea)
        assert market.publish(producer, tea, 30.0)
        waiter.join(30)
        assert got == [2]
        written = [r for r in records if r.levelno == HANDOFF]
        assert len(written) == (2 if level == logging.INFO else 0)
        market.close()
    finally:
        logger.removeHandler(handler)
    records = [r for r in records if r.levelno == HANDOFF]
    handoffs = [parse_handoff(record.getMessage()) for record in records]
    assert [(h.by, h.who, h.cart, h.received, h.needed) for h in handoffs if h] == [
        ("publish", producer, cart, 1, 2),
        ("publish", producer, cart, 2, 2),
    ]
    assert all(record.levelno == HANDOFF for record in records)
    assert handoffs[0] is not None and handoffs[1] is not None
    assert handoffs[0].t_ns <= handoffs[1].t_ns


def test_a_recorder_keeps_at_most_its_cap():
    recorder = Recorder(cap=3)
    for n in range(5):
        recorder.span("add", n, n + 1, "Linden")
    assert len(recorder.spans) == 3 and recorder.dropped == 2


def test_lanes_give_way_to_a_note_for_many_agents():
    events = [
        {"ph": "M", "name": "thread_name", "pid": 2, "tid": n, "args": {"name": f"c{n}"}}
        for n in range(1, MAX_LANES + 2)
    ]
    page = swim_lanes({"traceEvents": events})
    assert "too many lanes" in page and "<svg" not in page
    few = swim_lanes({"traceEvents": events[:3]})
    assert "<svg" in few and ">c3</text>" in few


@pytest.mark.usefixtures("chromium_ok")  # skipped without Chromium; under CI=true, failed
def test_course_case_04_swim_lanes_render_in_chromium(tmp_path, conformance_dir):
    """The --html page of a traced case 04, drawn by a real browser: its lanes are there."""
    _trace, report, page = _run_traced(tmp_path, conformance_dir / "04.in")
    html_path = tmp_path / "r.html"
    dom = chromium(tmp_path, "--window-size=1280,2400", "--dump-dom", html_path.as_uri()).stdout
    assert 'id="lanes"' in dom, "the browser's page has no swim lanes"
    lanes = dom[dom.index('id="lanes"') :]
    assert all(f">{agent['name']}</text>" in lanes for agent in report["agents"])
    png = tmp_path / "lanes.png"
    chromium(tmp_path, f"--screenshot={png}", "--window-size=1280,2400", html_path.as_uri())
    _width, _height, pixels = png_pixels(png.read_bytes())
    assert near(WAIT, Counter(pixels)) > 50, "no wait drawn in the lanes' colour"
    assert page.count('id="lanes"') == 1
