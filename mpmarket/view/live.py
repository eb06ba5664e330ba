"""The live view of a run: what a person watches on stderr while it goes.

``format_live`` and ``format_progress_line`` are pure: they read a
``Timeline`` (and the run's elapsed wall time) and return a rich renderable or
one plain line; they never look at a clock or a terminal. ``LiveView`` does
the I/O: redrawn in place on a terminal, an occasional plain line otherwise,
nothing at all when quiet::

    runner's observer ── update(timeline) ──> LiveView
                                                │ terminal: rich Live, redrawn
                                                │   at most every REFRESH_S
                                                │ not a terminal: a plain line
                                                │   every PLAIN_LINE_INTERVAL_S
                                                └ quiet: nothing

``LiveView`` never starts a thread (``Live(auto_refresh=False)``): it draws
only inside ``update`` and ``stop``, so agent processes may be forked while
it exists.

A result line is one line wherever it goes: when stdout is the terminal the
view is drawn on, result lines are shown above the view exactly as written
(``view.results.ResultLines``), never hard-wrapped at the terminal's width.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.live import Live
from rich.measure import Measurement
from rich.segment import Segment
from rich.style import Style
from rich.table import Table
from rich.text import Text

from mpmarket.run.timeline import Sample, Timeline
from mpmarket.view.console import new_console
from mpmarket.view.results import ResultLines, stdout_shares_the_view

__all__ = [
    "LIVE_RATE_WINDOW_S",
    "MAX_PRODUCER_ROWS",
    "PLAIN_LINE_INTERVAL_S",
    "REFRESH_S",
    "LiveView",
    "format_live",
    "format_progress_line",
]

# The terminal view redraws at most this often: smooth enough to look alive,
# rare enough that drawing costs nothing next to the run (a redraw of a few
# dozen lines takes about a millisecond).
REFRESH_S = 0.2

# Without a terminal (a CI log, a file) a plain line is written this often:
# often enough that a log shows the run is alive and how fast it goes, rare
# enough that a long run does not bury its own log (a 10-minute run: 120 lines).
PLAIN_LINE_INTERVAL_S = 5.0

# The live view's rates and ETA are measured over this trailing window: long
# enough to smooth out the bursts of single orders, short enough to follow a
# change. (The HTML page's charts use their own: view.charts.CHART_RATE_WINDOW_S.)
LIVE_RATE_WINDOW_S = 3.0

# Producers shown one bar each; with more, the busiest are shown and a
# "+N more" line sums up the rest, so the view fits a 24-line terminal.
MAX_PRODUCER_ROWS = 10

# The widest a bar grows; narrow terminals shrink it (down to MIN_BAR_WIDTH).
MAX_BAR_WIDTH = 40
MIN_BAR_WIDTH = 8
# Producer names longer than this are cut with an ellipsis.
MAX_LABEL_WIDTH = 20

_EMPTY = Sample(0.0, 0, 0, 0, (), 0, 0)


# -- small pure helpers ---------------------------------------------------------


def _duration(seconds: float) -> str:
    """``12.0 s``, ``3 min 05 s``, ``1 h 02 min``: short and readable."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _eta(seconds: float) -> str:
    """An ETA is a guess: whole seconds are precise enough."""
    if seconds < 60:
        return f"{max(seconds, 0.0):.0f} s"
    return _duration(seconds)


def _percent(done: int, total: int) -> str:
    return f"{done / total:.0%}" if total > 0 else "-"


def _rate(timeline: Timeline, attribute: str, window_s: float) -> float:
    """Units of ``attribute`` (a counter of Sample) per second over ``window_s``."""
    samples = timeline.samples
    if len(samples) < 2:
        return 0.0
    last = samples[-1]
    first = next(s for s in samples if s.t >= last.t - window_s)
    if last.t <= first.t:
        return 0.0
    return (getattr(last, attribute) - getattr(first, attribute)) / (last.t - first.t)


@dataclass(frozen=True)
class _Progress:
    """The numbers both views show, computed once."""

    latest: Sample
    products_per_s: float
    orders_per_s: float
    eta_s: float | None  # None: no rate yet, or nothing to buy

    @classmethod
    def of(cls, timeline: Timeline) -> _Progress:
        latest = timeline.latest or _EMPTY
        products_per_s = timeline.rate(LIVE_RATE_WINDOW_S)
        orders_per_s = _rate(timeline, "orders", LIVE_RATE_WINDOW_S)
        remaining = max(timeline.products_to_buy - latest.bought, 0)
        eta_s: float | None = None
        if remaining == 0 and timeline.products_to_buy > 0:
            eta_s = 0.0
        elif products_per_s > 0:
            eta_s = remaining / products_per_s
        return cls(latest, products_per_s, orders_per_s, eta_s)


class _Bar:
    """A horizontal bar that fills its table cell, from MIN_BAR_WIDTH to ``width``.

    Full blocks on a Unicode console, ``#`` and ``.`` on an ASCII one; the
    empty part is drawn (dim) so the bar reads right without colour too.
    """

    def __init__(self, completed: float, total: float, style: str, width: int = MAX_BAR_WIDTH):
        self.fraction = min(max(completed / total, 0.0), 1.0) if total > 0 else 0.0
        self.style = style
        self.width = width

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement(min(MIN_BAR_WIDTH, self.width), self.width)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = max(min(self.width, options.max_width), 1)
        filled = round(self.fraction * width)
        if self.fraction > 0 and filled == 0:
            filled = 1  # something on sale never looks like nothing
        full, empty = ("#", ".") if options.ascii_only else ("█", "░")
        yield Segment(full * filled, console.get_style(self.style))
        yield Segment(empty * (width - filled), Style(dim=True))


def _fill_style(fraction: float) -> str:
    """Green while there is room, yellow when nearly full, red when full."""
    if fraction >= 1.0:
        return "red"
    if fraction >= 0.75:
        return "yellow"
    return "green"


def _on_sale(sample: Sample, count: int) -> list[int]:
    """Units on sale of each of ``count`` producers (0 for any not sampled yet)."""
    per_producer = sample.on_sale_per_producer
    return [per_producer[i] if i < len(per_producer) else 0 for i in range(count)]


def _busiest(timeline: Timeline, latest: Sample) -> list[int]:
    """Indices of the producers to draw: all in order, or the busiest first."""
    count = len(timeline.producers)
    on_sale = _on_sale(latest, count)
    if count <= MAX_PRODUCER_ROWS:
        return list(range(count))
    ranked = sorted(range(count), key=lambda i: (-on_sale[i], i))
    return ranked[:MAX_PRODUCER_ROWS]


# -- the views -------------------------------------------------------------------


def format_live(timeline: Timeline, elapsed_s: float) -> Group:
    """The terminal view: progress, rates, waiting agents and a bar per producer.

    Pure and stable: the same timeline and ``elapsed_s`` always draw the same.
    """
    progress = _Progress.of(timeline)
    latest = progress.latest
    to_buy = timeline.products_to_buy
    producers, consumers = len(timeline.producers), len(timeline.consumers)
    cap = timeline.queue_size_per_producer
    shown = _busiest(timeline, latest)
    labels = ["consumers done", *(f"  {timeline.producers[i]}" for i in shown)]
    label_width = min(max(len(label) for label in labels), MAX_LABEL_WIDTH)

    title = Text.assemble(
        ("mpmarket run", "bold"),
        "  ",
        (_duration(elapsed_s), "bold cyan"),
        f"  {producers} producers (up to {cap} on sale each), {consumers} consumers",
        no_wrap=True,
        overflow="ellipsis",
    )

    bars = Table.grid(padding=(0, 1))
    bars.add_column(
        "what", no_wrap=True, min_width=label_width, max_width=label_width, overflow="ellipsis"
    )
    bars.add_column("bar")  # the only wrapable column: narrow terminals shrink the bars
    bars.add_column("count", justify="right", no_wrap=True)
    bars.add_column("note", no_wrap=True)
    done = to_buy > 0 and latest.bought >= to_buy
    eta = "done" if done else "ETA -" if progress.eta_s is None else f"ETA {_eta(progress.eta_s)}"
    bars.add_row(
        Text("bought", style="bold"),
        _Bar(latest.bought, to_buy, "green" if done else "cyan"),
        f"{latest.bought}/{to_buy}",
        f"{_percent(latest.bought, to_buy):>4}  {eta}",
    )
    all_done = consumers > 0 and latest.consumers_done >= consumers
    bars.add_row(
        Text("consumers done", style="bold"),
        _Bar(latest.consumers_done, consumers, "green" if all_done else "cyan"),
        f"{latest.consumers_done}/{consumers}",
        f"{_percent(latest.consumers_done, consumers):>4}",
    )

    facts = Table.grid(padding=(0, 1))
    facts.add_column("what", style="bold", no_wrap=True, min_width=label_width)
    facts.add_column("value", no_wrap=True, overflow="ellipsis")
    facts.add_row(
        "rate",
        f"{progress.products_per_s:.0f} products/s, {progress.orders_per_s:.1f} orders/s,"
        f" {latest.orders} orders so far",
    )
    facts.add_row(
        "waiting",
        Text.assemble(
            (str(latest.waiting_consumers), "bold yellow" if latest.waiting_consumers else ""),
            " consumers for products, ",
            (str(latest.waiting_producers), "bold red" if latest.waiting_producers else ""),
            " producers on a full queue",
        ),
    )
    parts: list[Table | Text] = [title, bars, facts]
    if not producers:
        return Group(*parts)

    heading = "on sale per producer"
    if len(shown) < producers:
        heading += f" (the {len(shown)} busiest of {producers})"
    shelves = Table.grid(padding=(0, 1))
    shelves.add_column(
        "producer", no_wrap=True, min_width=label_width, max_width=label_width, overflow="ellipsis"
    )
    shelves.add_column("bar")  # the only wrapable column: narrow terminals shrink the bars
    shelves.add_column("count", justify="right", no_wrap=True, min_width=len(f"{to_buy}/{to_buy}"))
    shelves.add_column("note", no_wrap=True)
    on_sale_now = _on_sale(latest, producers)
    for index in shown:
        on_sale = on_sale_now[index]
        fraction = on_sale / cap if cap > 0 else 0.0
        shelves.add_row(
            Text(f"  {timeline.producers[index]}"),  # a Text: names are never markup
            _Bar(on_sale, cap, _fill_style(fraction)),
            f"{on_sale}/{cap}",
            Text("full", style="bold red") if cap > 0 and on_sale >= cap else "",
        )
    parts += [Text(""), Text(heading, style="bold"), shelves]
    hidden = sorted(set(range(producers)) - set(shown))
    if hidden:
        hidden_on_sale = [on_sale_now[i] for i in hidden]
        full = sum(cap > 0 and n >= cap for n in hidden_on_sale)
        parts.append(
            Text(
                f"  +{len(hidden)} more producers: {sum(hidden_on_sale)} on sale, {full} full",
                style="dim",
            )
        )
    return Group(*parts)


def format_progress_line(timeline: Timeline, elapsed_s: float) -> str:
    """One plain line for a log, when stderr is not a terminal."""
    progress = _Progress.of(timeline)
    latest = progress.latest
    to_buy = timeline.products_to_buy
    line = (
        f"mpmarket: {_duration(elapsed_s)}"
        f"  bought {latest.bought}/{to_buy} ({_percent(latest.bought, to_buy)})"
        f"  {latest.consumers_done}/{len(timeline.consumers)} consumers done"
        f"  waiting: {latest.waiting_consumers} consumers, {latest.waiting_producers} producers"
        f"  {progress.products_per_s:.0f} products/s"
    )
    if progress.eta_s is not None and latest.bought < to_buy:
        line += f"  ETA {_eta(progress.eta_s)}"
    return line


# -- the I/O ----------------------------------------------------------------------


class LiveView:
    """Draws a run's ``Timeline`` on stderr as it grows; see the module docstring.

    ``start()`` once, ``update(timeline)`` as often as you like (it draws at
    most every ``refresh_s`` on a terminal, every ``plain_interval_s``
    otherwise), ``stop()`` once (safe to call twice). Draws only inside these
    calls: no thread is started.

    On a terminal the view stays at the bottom; result lines written to
    ``sys.stdout`` while it runs are shown above it, whole, when stdout is
    the same terminal, and go untouched to stdout when it is a pipe, a file
    or another terminal.

    The default console is ``new_console(stderr=True)``, which honours
    ``NO_COLOR`` (and ``FORCE_COLOR``, ``TERM=dumb``) from the environment.
    """

    def __init__(
        self,
        console: Console | None = None,
        *,
        quiet: bool = False,
        transient: bool = True,
        refresh_s: float | None = None,
        plain_interval_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.quiet = quiet
        self.console = console if console is not None else new_console(stderr=True)
        self.transient = transient
        self.refresh_s = REFRESH_S if refresh_s is None else refresh_s
        self.plain_interval_s = (
            PLAIN_LINE_INTERVAL_S if plain_interval_s is None else plain_interval_s
        )
        self._clock = clock
        self._live: Live | None = None
        self._results: ResultLines | None = None  # sys.stdout while the view is drawn
        self._started_at: float | None = None
        self._last_draw: float | None = None
        self._pending: tuple[Timeline, float] | None = None  # not drawn yet
        self._stopped = False

    @property
    def is_terminal(self) -> bool:
        """Redrawn in place? Not on a dumb terminal (TERM=dumb): plain lines there."""
        return self.console.is_terminal and not self.console.is_dumb_terminal

    def start(self) -> None:
        """Begin: on a terminal, reserve the lines of the view (nothing drawn yet)."""
        if self._started_at is not None:
            return
        self._started_at = self._clock()
        if not self.quiet and self.is_terminal:
            self._live = Live(
                console=self.console,
                auto_refresh=False,  # no refresh thread: safe across fork
                transient=self.transient,
                redirect_stdout=False,  # rich's redirection wraps lines: ours does not
                redirect_stderr=False,
            )
            self._live.start()
            if stdout_shares_the_view(self.console):
                self._results = ResultLines(self.console, sys.stdout)
                sys.stdout = self._results

    def update(self, timeline: Timeline, elapsed_s: float | None = None) -> None:
        """Show ``timeline`` if the last drawing is old enough; else keep it for later.

        ``elapsed_s``: the run's wall time so far; by default the time since
        ``start()``.
        """
        if self.quiet or self._stopped:
            return
        if self._started_at is None:
            self.start()
        now = self._clock()
        assert self._started_at is not None
        elapsed = now - self._started_at if elapsed_s is None else elapsed_s
        self._pending = (timeline, elapsed)
        if self._live is not None:  # the first drawing at once, then every refresh_s
            due = self._last_draw is None or now - self._last_draw >= self.refresh_s
        else:  # the first line one interval after the start: nothing to tell before
            last = self._started_at if self._last_draw is None else self._last_draw
            due = now - last >= self.plain_interval_s
        if due:
            self._draw(now)

    def stop(self) -> None:
        """End: a last drawing of what was not shown yet, then release the terminal."""
        if self._stopped:
            return
        self._stopped = True
        if self.quiet:
            return
        if self._pending is not None and (self._live is None or not self.transient):
            self._draw(self._clock())
        if self._results is not None:
            if sys.stdout is self._results:
                sys.stdout = self._results.stdout
            self._results.release()
            self._results = None
        if self._live is not None:
            self._live.stop()
            self._live = None

    def _draw(self, now: float) -> None:
        assert self._pending is not None
        timeline, elapsed = self._pending
        self._pending = None
        self._last_draw = now
        if self._live is not None:
            self._live.update(format_live(timeline, elapsed), refresh=True)
        else:
            self.console.print(
                format_progress_line(timeline, elapsed),
                markup=False,
                highlight=False,
                soft_wrap=True,  # one line, however narrow the log's idea of width
            )

    def __enter__(self) -> LiveView:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
