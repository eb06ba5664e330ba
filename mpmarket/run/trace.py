"""``--trace``: a run in the Trace Event Format, for Perfetto and chrome://tracing.

::

    agent processes: produce() / consume() ──> core.tracing.Recorder (in memory, capped)
        └─ at its end: Trace(slot, spans, dropped) on its pipe ──> AgentState.trace
    server: Marketplace logs each unit handed into a waiting cart (level HANDOFF)
        └─ a log file (the run's --log, or a temporary one) ──> read_handoffs()
    runner: Timeline samples (units on sale, waiting consumers)
    build_trace() ──> {"traceEvents": [...], ...}: one JSON document

The events (the format: "Trace Event Format", Google's document of 2016,
as Perfetto and chrome://tracing read it):

- ``M`` metadata: process 1 "producers", process 2 "consumers", process 3
  "market"; a thread (track) per agent, named after it, in workload order.
- ``X`` complete events, ``ts`` and ``dur`` in microseconds since the start
  barrier opened: a producer's ``publish`` (``publish blocked`` when it met a
  full queue, ``publish refused`` for a try that ended with the queue still
  full) and ``make``; a consumer's ``session``, holding its ``add``
  (``add waiting`` when it waited for products), ``remove`` and ``order``.
  Category ``work``, ``wait`` or ``session``.
- ``s`` / ``f`` flow events: from the publish (or remove) that handed a unit
  to a waiting add, to that add (``bp: "e"``: bound to the enclosing span).
  Which publish handed which unit to which cart is the market's own word
  (``Marketplace`` logs it), never guessed from timing.
- ``C`` counters on the market's track: units on sale per producer, waiting
  consumers and producers, from the run's samples (``SAMPLE_INTERVAL_S``).

Every time is ``time.monotonic_ns()``: CLOCK_MONOTONIC on Linux, one clock for
every process of the machine. A ``--connect`` run has no server log here,
so no flows.
"""

from __future__ import annotations

import bisect
import re
import shutil
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mpmarket.core.tracing import MAX_SPANS, Span
from mpmarket.net.oplog import LogSettings
from mpmarket.run.fleet import AgentState
from mpmarket.run.timeline import Timeline

__all__ = [
    "HANDOFF_LOG_MAX_BYTES",
    "PIDS",
    "TRACE_STOP_GRACE",
    "WAITS",
    "Handoff",
    "TraceRecording",
    "build_trace",
    "log_files",
    "parse_handoff",
    "read_handoffs",
]

# The processes of the trace: one per role, one for the market's counters.
PIDS = {"producer": 1, "consumer": 2, "market": 3}
_PROCESS_NAMES = {1: "producers", 2: "consumers", 3: "market"}
# Spans that are waits, drawn apart from work.
WAITS = frozenset({"publish blocked", "publish refused", "add waiting"})
_STARTS = frozenset({"publish", "publish blocked"})  # a producer's spans that hand units
_ADDS = frozenset({"add", "add waiting"})

_HANDOFF = re.compile(
    r"handed\((publish|remove|release), (\d+), .*\) -> cart (\d+) \((\d+) of (\d+)\) at (\d+) ns$"
)


@dataclass(frozen=True)
class Handoff:
    """A unit handed into a waiting cart: by whom (``publish`` of producer
    ``who``, ``remove`` or ``release`` of cart ``who``), to which cart, when."""

    by: str
    who: int
    cart: int
    received: int
    needed: int
    t_ns: int


def parse_handoff(line: str) -> Handoff | None:
    """The hand-over a log line tells, or None for any other line."""
    match = _HANDOFF.search(line.rstrip("\n"))
    if match is None:
        return None
    by, who, cart, received, needed, t_ns = match.groups()
    return Handoff(by, int(who), int(cart), int(received), int(needed), int(t_ns))


def log_files(path: Path, backups: int) -> list[Path]:
    """A rotating log's files, oldest first: ``path.N`` .. ``path.1``, ``path``."""
    rotated = [path.with_name(f"{path.name}.{n}") for n in range(backups, 0, -1)]
    return [p for p in [*rotated, path] if p.is_file()]


def read_handoffs(paths: Iterable[Path]) -> list[Handoff]:
    """Every hand-over in these log files, in their order."""
    handoffs = []
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as lines:
            for line in lines:
                if "handed(" in line:
                    handoff = parse_handoff(line)
                    if handoff is not None:
                        handoffs.append(handoff)
    return handoffs


def _us(t_ns: int, zero_ns: int) -> float:
    """Microseconds since ``zero_ns``, to the nanosecond."""
    return round((t_ns - zero_ns) / 1000, 3)


# What a span's detail is, by its name (the rest: the product's name).
_DETAILS = {"session": "session", "order": "products"}


def _args(name: str, detail: object) -> dict[str, Any]:
    return {_DETAILS.get(name, "product"): detail} if detail is not None else {}


def _category(name: str) -> str:
    return "wait" if name in WAITS else "session" if name == "session" else "work"


class _Track:
    """One agent's spans, sorted by start, for finding the span at a time."""

    def __init__(self, pid: int, tid: int, spans: Sequence[Span]) -> None:
        self.pid, self.tid = pid, tid
        self.spans = sorted(spans, key=lambda span: (span[1], -span[2]))
        self.starts = [span[1] for span in self.spans]

    def holding(self, t_ns: int, names: frozenset[str]) -> Span | None:
        """The span of one of ``names`` open at ``t_ns`` (the latest to start)."""
        i = bisect.bisect_right(self.starts, t_ns)
        for span in reversed(self.spans[max(0, i - 4) : i]):
            if span[0] in names and span[1] <= t_ns <= span[2]:
                return span
        return None

    def next_ending(self, t_ns: int, names: frozenset[str]) -> Span | None:
        """The first span of ``names`` that ends at or after ``t_ns``."""
        i = max(0, bisect.bisect_right(self.starts, t_ns) - 4)
        for span in self.spans[i:]:
            if span[0] in names and span[2] >= t_ns:
                return span
        return None


def build_trace(
    agents: Sequence[AgentState],
    zero_ns: int,
    *,
    timeline: Timeline | None = None,
    timeline_zero_ns: int | None = None,
    handoffs: Sequence[Handoff] = (),
    source: str = "",
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    """The run's trace: agents' spans, the market's hand-overs as flows, counters.

    ``zero_ns`` (monotonic) is the trace's time 0, the start barrier's
    release; ``timeline_zero_ns`` is when the samples' ``t`` is 0.
    """
    events: list[dict[str, Any]] = [
        {"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "args": {"name": name}}
        for pid, name in _PROCESS_NAMES.items()
    ]
    events += [
        {"ph": "M", "name": "process_sort_index", "pid": pid, "tid": 0, "args": {"sort_index": pid}}
        for pid in _PROCESS_NAMES
    ]
    producers: dict[int, _Track] = {}  # producer id -> its track
    carts: dict[int, _Track] = {}  # cart id -> its consumer's track
    numbers = {"producer": 0, "consumer": 0}
    dropped: dict[str, int] = {}
    spans = 0
    for agent in agents:
        if agent.role not in numbers:
            continue
        pid = PIDS[agent.role]
        numbers[agent.role] += 1
        tid = numbers[agent.role]
        events.append(
            {"ph": "M", "name": "thread_name", "pid": pid, "tid": tid, "args": {"name": agent.name}}
        )
        events.append(
            {
                "ph": "M",
                "name": "thread_sort_index",
                "pid": pid,
                "tid": tid,
                "args": {"sort_index": tid},
            }
        )
        own = agent.trace.spans if agent.trace is not None else []
        if agent.trace is not None and agent.trace.dropped:
            dropped[agent.name] = agent.trace.dropped
        track = _Track(pid, tid, own)
        if agent.ident is not None:
            (producers if agent.role == "producer" else carts)[agent.ident] = track
        for name, start, end, detail in track.spans:
            spans += 1
            events.append(
                {
                    "ph": "X",
                    "name": name,
                    "cat": _category(name),
                    "ts": _us(start, zero_ns),
                    "dur": round((end - start) / 1000, 3),
                    "pid": pid,
                    "tid": tid,
                    "args": _args(name, detail),
                }
            )
    flows, unmatched = _flows(handoffs, producers, carts, zero_ns)
    events += flows
    if timeline is not None and timeline_zero_ns is not None:
        events += _counters(timeline, timeline_zero_ns, zero_ns)
    return {
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "otherData": {
            "source": source,
            "clock": "CLOCK_MONOTONIC (time.monotonic_ns), microseconds since the start",
            "zero_monotonic_ns": zero_ns,
            "spans": spans,
            "spans_cap_per_agent": MAX_SPANS,
            "spans_dropped": dropped,
            "handoffs": len(handoffs),
            "flows": len(flows) // 2,
            "handoffs_without_spans": unmatched,
            # killed, or stopped before they could send them
            "agents_without_spans": [a.name for a in agents if a.trace is None],
            "notes": list(notes),
        },
    }


def _flows(
    handoffs: Sequence[Handoff],
    producers: dict[int, _Track],
    carts: dict[int, _Track],
    zero_ns: int,
) -> tuple[list[dict[str, Any]], int]:
    """An arrow (``s`` then ``f``) per hand-over whose two spans are in the trace.

    The others (a cart given back by the runner, an agent of another machine,
    a span past the cap) are counted.
    """
    events: list[dict[str, Any]] = []
    unmatched = 0
    for handoff in handoffs:
        target = carts.get(handoff.cart)
        if handoff.by == "publish":
            source, names = producers.get(handoff.who), _STARTS
        else:
            source, names = (
                (carts.get(handoff.who) if handoff.by == "remove" else None),
                frozenset({"remove"}),
            )
        start = source.holding(handoff.t_ns, names) if source is not None else None
        end = target.next_ending(handoff.t_ns, _ADDS) if target is not None else None
        if source is None or target is None or start is None or end is None:
            unmatched += 1
            continue
        ident = len(events) // 2 + 1
        common = {"name": "hand-over", "cat": "flow", "id": ident}
        events.append(
            {
                **common,
                "ph": "s",
                "ts": _us(handoff.t_ns, zero_ns),
                "pid": source.pid,
                "tid": source.tid,
            }
        )
        events.append(
            {
                **common,
                "ph": "f",
                "bp": "e",
                "ts": _us(max(handoff.t_ns, end[1]), zero_ns),
                "pid": target.pid,
                "tid": target.tid,
                "args": {"received": handoff.received, "of": handoff.needed},
            }
        )
    return events, unmatched


def _counters(timeline: Timeline, timeline_zero_ns: int, zero_ns: int) -> list[dict[str, Any]]:
    """The market's counters, from the run's samples."""
    events = []
    pid = PIDS["market"]
    for sample in timeline.samples:
        ts = _us(timeline_zero_ns + int(sample.t * 1e9), zero_ns)
        on_sale = dict(zip(timeline.producers, sample.on_sale_per_producer, strict=False))
        events.append(
            {"ph": "C", "name": "units on sale", "pid": pid, "tid": 0, "ts": ts, "args": on_sale}
        )
        waiting = {"consumers": sample.waiting_consumers, "producers": sample.waiting_producers}
        events.append(
            {"ph": "C", "name": "waiting", "pid": pid, "tid": 0, "ts": ts, "args": waiting}
        )
    return events


# More time the shutdown gives a traced run's agents to end: each sends its
# spans then (up to MAX_SPANS: a few MB to pickle and pipe), and on a loaded
# machine a stress run's agents were seen to need more than STOP_GRACE. It is
# only waited for while an agent has not ended.
TRACE_STOP_GRACE = 5.0

# The temporary hand-over log of a traced run (without --log): one line per
# unit handed to a waiting cart, about 120 bytes; rotated past this size, the
# previous file kept, so a long stress run cannot fill the disk.
HANDOFF_LOG_MAX_BYTES = 64 * 1024 * 1024


class TraceRecording:
    """What a traced run (``LocalRun(trace=True)``) keeps besides its agents' spans.

    ``log``: the operation log to give the server. The run's own ``--log``
    when it has one (its hand-overs are then read from it; at WARNING it has
    none), else a temporary one at level HANDOFF: the hand-overs and nothing
    else, removed once read. Without a server of its own (``server_log``
    False: ``--connect``, the classic market) there is none.
    """

    def __init__(self, log: LogSettings | None, *, server_log: bool) -> None:
        self.log = log
        self.notes: list[str] = []
        self._temporary: Path | None = None
        if not server_log:
            self.notes.append(
                "no flows: a --connect or classic market's hand-overs are not logged here"
            )
        elif log is None:
            self._temporary = Path(tempfile.mkdtemp(prefix="mpmarket-trace-"))
            path = self._temporary / "handoffs.log"
            self.log = LogSettings(str(path), "HANDOFF", HANDOFF_LOG_MAX_BYTES, 1)
        elif log.level.upper() == "WARNING":
            self.notes.append("no flows: the operation log (--log-level WARNING) has no hand-overs")
        self.zero_ns: int | None = None  # the start barrier's release
        self.timeline_zero_ns: int | None = None  # the samples' time 0

    def build(
        self, agents: Sequence[AgentState], timeline: Timeline | None, source: str
    ) -> dict[str, Any]:
        """The trace, once the server has stopped (its log is complete)."""
        handoffs: list[Handoff] = []
        if self.log is not None and not self.notes:
            path = Path(self.log.path)
            handoffs = read_handoffs(log_files(path, self.log.backups))
        if self._temporary is not None:
            shutil.rmtree(self._temporary, ignore_errors=True)
            self._temporary = None
        zero = self.zero_ns if self.zero_ns is not None else time.monotonic_ns()
        return build_trace(
            agents,
            zero,
            timeline=timeline,
            timeline_zero_ns=self.timeline_zero_ns,
            handoffs=handoffs,
            source=source,
            notes=self.notes,
        )
