"""The live view: its rendering in a fixed-size terminal, its plain lines, LiveView's I/O.

Timelines are built by hand: no process, no market. LiveView gets a fake
clock, so its throttling is checked without sleeping.
"""

from __future__ import annotations

import io
import re
import sys
import threading

import pytest
from rich.console import Console

from mpmarket.run.timeline import Sample, Timeline
from mpmarket.view import live as live
from mpmarket.view.live import LiveView, format_live, format_progress_line

# SGR parameters that set a colour: 30-37/90-97 (foreground), 40-47/100-107
# (background), 38/48 (extended, 256 or true colour).
_SGR = re.compile(r"\x1b\[([0-9;]*)m")


def colour_codes(text: str) -> list[str]:
    """The colour-setting SGR escape sequences in ``text`` (bold, dim, reset are not)."""
    found = []
    for match in _SGR.finditer(text):
        params = [int(p) for p in match.group(1).split(";") if p]
        if any(30 <= p <= 49 or 90 <= p <= 107 for p in params):
            found.append(match.group(0))
    return found


@pytest.fixture(autouse=True)
def plain_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No colour or terminal settings of the caller's shell leak into these tests."""
    for name in (
        "NO_COLOR",
        "FORCE_COLOR",
        "TTY_COMPATIBLE",
        "TTY_INTERACTIVE",
        "COLUMNS",
        "LINES",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")


def timeline(
    producers: int = 3,
    *,
    consumers: int = 200,
    cap: int = 15,
    to_buy: int = 2939,
    samples: list[Sample] | None = None,
    names: tuple[str, ...] | None = None,
) -> Timeline:
    return Timeline(
        producers=names or tuple(f"prod{i + 1}" for i in range(producers)),
        consumers=tuple(f"cons{i + 1}" for i in range(consumers)),
        queue_size_per_producer=cap,
        products_to_buy=to_buy,
        sessions_to_run=3 * consumers,
        samples=samples if samples is not None else [],
    )


def mid_run(on_sale: tuple[int, ...] = (15, 7, 0)) -> Timeline:
    """12 s in: 1234 of 2939 bought, 410 products/s over the last 3 s."""
    return timeline(
        len(on_sale),
        samples=[
            Sample(0.0, 0, 0, 0, (0,) * len(on_sale), 0, 0),
            Sample(9.0, 4, 1, 0, on_sale, 40, 0),
            Sample(12.0, 1234, 300, 30, on_sale, 12, 3),
        ],
    )


def render(renderable: object, width: int = 100) -> str:
    console = Console(
        record=True, width=width, force_terminal=True, color_system=None, file=io.StringIO()
    )
    console.print(renderable)
    return console.export_text()


def lines_of(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines()]


# -- format_live ------------------------------------------------------------------


def test_live_view_in_a_100_column_terminal() -> None:
    assert lines_of(render(format_live(mid_run(), 12.0))) == [
        "mpmarket run  12.0 s  3 producers (up to 15 on sale each), 200 consumers",
        "bought         █████████████████░░░░░░░░░░░░░░░░░░░░░░░ 1234/2939  42%  ETA 4 s",
        "consumers done ██████░░░░░░░░░░░░░░░░░░░░░░░░░░░░░░░░░░    30/200  15%",
        "rate           410 products/s, 99.7 orders/s, 300 orders so far",
        "waiting        12 consumers for products, 3 producers on a full queue",
        "",
        "on sale per producer",
        "  prod1        ████████████████████████████████████████     15/15 full",
        "  prod2        ███████████████████░░░░░░░░░░░░░░░░░░░░░      7/15",
        "  prod3        ░░░░░░░░░░░░░░░░░░░░░░░░░░░░░░░░░░░░░░░░      0/15",
    ]


@pytest.mark.parametrize("width", [80, 100, 120])
def test_live_view_fits_80_to_120_columns(width: int) -> None:
    text = render(format_live(mid_run(), 12.0), width)
    lines = lines_of(text)
    assert len(lines) == 10  # nothing wrapped
    assert all(len(line) <= width for line in lines)
    assert "1234/2939  42%  ETA 4 s" in lines[1]
    assert lines[7].endswith("15/15 full")


def test_live_view_shows_the_busiest_producers_of_many() -> None:
    on_sale = tuple((i * 7) % 16 for i in range(40))  # 15 for i = 9 and i = 25 only
    text = render(format_live(mid_run(on_sale), 12.0))
    lines = lines_of(text)
    assert len(lines) <= 24  # fits a default terminal
    assert "on sale per producer (the 10 busiest of 40)" in lines
    producer_lines = [line for line in lines if line.startswith("  prod")]
    assert len(producer_lines) == live.MAX_PRODUCER_ROWS
    assert producer_lines[0].startswith("  prod10 ")  # busiest first, ties by position
    assert producer_lines[1].startswith("  prod26 ")
    assert producer_lines[0].endswith("15/15 full")
    shown = sorted(range(40), key=lambda i: (-on_sale[i], i))[:10]
    hidden = [on_sale[i] for i in range(40) if i not in shown]
    assert lines[-1] == f"  +30 more producers: {sum(hidden)} on sale, 0 full"


def test_live_view_before_the_first_sample() -> None:
    lines = lines_of(render(format_live(timeline(2, consumers=4, to_buy=10), 0.0)))
    assert lines[0].startswith("mpmarket run  0.0 s  2 producers")
    assert "0/10   0%  ETA -" in lines[1]
    assert "0/4   0%" in lines[2]
    assert lines[3].startswith("rate           0 products/s, 0.0 orders/s")


def test_live_view_when_everything_is_bought() -> None:
    tl = timeline(
        1,
        consumers=2,
        to_buy=6,
        samples=[Sample(0.0, 0, 0, 0, (0,), 2, 0), Sample(1.0, 6, 2, 2, (1,), 0, 0)],
    )
    lines = lines_of(render(format_live(tl, 61.5)))
    assert lines[0].startswith("mpmarket run  1 min 01 s")
    assert lines[1].endswith("6/6 100%  done")
    assert "2/2 100%" in lines[2]


def test_live_view_with_nothing_to_buy_and_no_producers() -> None:
    tl = timeline(0, consumers=0, to_buy=0, samples=[Sample(0.0, 0, 0, 0, (), 0, 0)])
    lines = lines_of(render(format_live(tl, 1.0)))
    assert "0/0    -  ETA -" in lines[1]
    assert not any("on sale per producer" in line for line in lines)


def test_names_are_shown_as_they_are_never_as_markup() -> None:
    tl = mid_run()
    tl.producers = ("[bold red]x[/]", '<b>&"', "prod3")
    text = render(format_live(tl, 12.0))
    assert "  [bold red]x[/] " in text
    assert '  <b>&" ' in text


def test_long_producer_names_are_cut() -> None:
    tl = mid_run()
    tl.producers = ("a-producer-with-a-very-long-name-indeed", "p2", "p3")
    lines = lines_of(render(format_live(tl, 12.0), 80))
    assert all(len(line) <= 80 for line in lines)
    assert any(line.startswith("  a-producer-with-a…") for line in lines)


def test_live_view_is_stable() -> None:
    tl = mid_run(tuple(range(16)))
    assert render(format_live(tl, 12.0)) == render(format_live(tl, 12.0))


def test_an_ascii_console_gets_ascii_bars() -> None:
    class AsciiFile(io.StringIO):
        encoding = "ascii"  # type: ignore[assignment]

    console = Console(
        record=True, width=100, force_terminal=True, color_system=None, file=AsciiFile()
    )
    console.print(format_live(mid_run(), 12.0))
    text = console.export_text()
    assert "#################....................... 1234/2939" in text
    assert "█" not in text


# -- format_progress_line ------------------------------------------------------------


def test_progress_line() -> None:
    assert format_progress_line(mid_run(), 12.0) == (
        "mpmarket: 12.0 s  bought 1234/2939 (42%)  30/200 consumers done"
        "  waiting: 12 consumers, 3 producers  410 products/s  ETA 4 s"
    )


def test_progress_line_before_any_sample_and_at_the_end() -> None:
    assert format_progress_line(timeline(2, consumers=4, to_buy=10), 0.0) == (
        "mpmarket: 0.0 s  bought 0/10 (0%)  0/4 consumers done"
        "  waiting: 0 consumers, 0 producers  0 products/s"
    )
    done = timeline(
        1,
        consumers=2,
        to_buy=6,
        samples=[Sample(0.0, 0, 0, 0, (0,), 2, 0), Sample(2.0, 6, 2, 2, (1,), 0, 0)],
    )
    assert format_progress_line(done, 125.0) == (
        "mpmarket: 2 min 05 s  bought 6/6 (100%)  2/2 consumers done"
        "  waiting: 0 consumers, 0 producers  3 products/s"
    )


def test_progress_line_with_nothing_to_buy() -> None:
    tl = timeline(1, consumers=0, to_buy=0, samples=[Sample(0.0, 0, 0, 0, (0,), 0, 0)])
    assert "bought 0/0 (-)" in format_progress_line(tl, 1.0)


# -- LiveView ------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def terminal(width: int = 100, color_system: str | None = None) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    console = Console(
        file=out,
        force_terminal=True,
        width=width,
        color_system=color_system,  # type: ignore[arg-type]
    )
    return console, out


def not_a_terminal() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=80), out


def test_quiet_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    for console, out in (terminal(), not_a_terminal()):
        view = LiveView(console, quiet=True, clock=FakeClock())
        view.start()
        view.update(mid_run(), 12.0)
        view.stop()
        assert out.getvalue() == ""
    view = LiveView(quiet=True)  # the default console: stderr
    view.start()
    view.update(mid_run(), 12.0)
    view.stop()
    assert capsys.readouterr() == ("", "")


def test_not_a_terminal_prints_a_plain_line_every_interval() -> None:
    console, out = not_a_terminal()
    clock = FakeClock()
    view = LiveView(console, clock=clock, plain_interval_s=5.0)
    assert not view.is_terminal
    tl = mid_run()
    view.start()
    for dt, elapsed in ((1.0, 1.0), (4.9, 4.9), (5.0, 5.0), (9.0, 9.0), (10.5, 10.5), (11.0, 11.0)):
        clock.now = 100.0 + dt
        view.update(tl, elapsed)
    assert out.getvalue().splitlines() == [
        format_progress_line(tl, 5.0),
        format_progress_line(tl, 10.5),
    ]
    view.stop()  # what came after the last line is told once more
    view.stop()
    assert out.getvalue().splitlines()[2:] == [format_progress_line(tl, 11.0)]
    assert "\x1b" not in out.getvalue()


def test_plain_lines_are_never_wrapped() -> None:
    console, out = not_a_terminal()  # 80 columns; the line is longer
    clock = FakeClock()
    view = LiveView(console, clock=clock)
    view.start()
    clock.now += live.PLAIN_LINE_INTERVAL_S
    view.update(mid_run())
    view.stop()
    assert out.getvalue() == format_progress_line(mid_run(), live.PLAIN_LINE_INTERVAL_S) + "\n"


def test_elapsed_defaults_to_the_time_since_start() -> None:
    console, out = not_a_terminal()
    clock = FakeClock()
    view = LiveView(console, clock=clock, plain_interval_s=1.0)
    view.start()
    clock.now += 2.5
    view.update(mid_run())
    assert out.getvalue().startswith("mpmarket: 2.5 s  ")
    view.stop()


def test_a_dumb_terminal_gets_plain_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "dumb")
    console, out = terminal()
    clock = FakeClock()
    view = LiveView(console, clock=clock, plain_interval_s=1.0)
    assert not view.is_terminal
    view.start()
    clock.now += 1.0
    view.update(mid_run(), 12.0)
    assert out.getvalue() == format_progress_line(mid_run(), 12.0) + "\n"
    view.stop()


def test_terminal_view_redraws_in_place_at_most_every_refresh(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    console, out = terminal()
    clock = FakeClock()
    view = LiveView(console, clock=clock, refresh_s=0.2)
    drawn: list[float] = []
    real_format = live.format_live

    def counting_format(tl: Timeline, elapsed_s: float) -> object:
        drawn.append(elapsed_s)
        return real_format(tl, elapsed_s)

    monkeypatch.setattr(live, "format_live", counting_format)
    threads = threading.active_count()
    stdout = sys.stdout
    view.start()
    assert threading.active_count() == threads  # no refresh thread: safe across fork
    assert sys.stdout is stdout  # stdout is not a terminal here: result lines untouched
    tl = mid_run()
    for dt in (0.0, 0.1, 0.19, 0.2, 0.3, 0.45):
        clock.now = 100.0 + dt
        view.update(tl, dt)
    assert drawn == [0.0, 0.2, 0.45]
    assert threading.active_count() == threads
    text = out.getvalue()
    assert "1234/2939  42%  ETA 4 s" in text
    assert "\x1b[" in text  # cursor movement: redrawn in place
    view.stop()
    assert drawn == [0.0, 0.2, 0.45]  # transient: nothing more to draw at the end
    view.stop()


def test_terminal_view_that_stays_shows_the_last_state() -> None:
    console, out = terminal()
    clock = FakeClock()
    view = LiveView(console, clock=clock, transient=False, refresh_s=1.0)
    with view:
        view.update(timeline(1, consumers=2, to_buy=6), 0.0)
        clock.now += 0.5
        done = timeline(
            1,
            consumers=2,
            to_buy=6,
            samples=[Sample(0.0, 0, 0, 0, (0,), 2, 0), Sample(0.5, 6, 2, 2, (1,), 0, 0)],
        )
        view.update(done, 0.5)  # too soon to draw...
    assert "6/6 100%  done" in out.getvalue()  # ...but drawn at the end


def test_no_color_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    def run_view() -> str:
        console, out = terminal(color_system="truecolor")
        view = LiveView(console, clock=FakeClock(), transient=False)
        view.start()
        view.update(mid_run(), 12.0)
        view.stop()
        return out.getvalue()

    assert colour_codes(run_view())  # the view has colours...
    monkeypatch.setenv("NO_COLOR", "1")
    text = run_view()
    assert "1234/2939" in text and "\x1b[" in text  # ...still drawn in place...
    assert colour_codes(text) == []  # ...but none with NO_COLOR
    assert LiveView().console.no_color  # the default console reads it too


def test_no_color_on_the_default_stderr_console(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("FORCE_COLOR", "1")  # a terminal, as far as rich is concerned
    view = LiveView(transient=False, clock=FakeClock())
    assert view.is_terminal
    view.start()
    view.update(mid_run(), 12.0)
    view.stop()
    err = capsys.readouterr().err
    assert "1234/2939" in err
    assert colour_codes(err) == []
