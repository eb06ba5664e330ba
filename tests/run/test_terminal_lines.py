"""A result line is one line wherever it goes: a terminal of any width, a pipe, a log.

Each test runs a real ``mpmarket run`` with its stdout and stderr on a real
pseudo-terminal of a set size (TIOCSWINSZ), reads back everything the
terminal got, and compares the " bought " lines with the same run's lines
on a pipe, order aside: a line the terminal's width had split in two would
be missing.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest

from tests.helpers import CLI_TIMEOUT_S, bought_lines, run_cli

# Names far longer than any terminal is wide, with spaces (where a wrap would
# break) and without.
LONG_NAMES = """
[market]
queue_size_per_producer = 3

[products]
long = { kind = "Coffee", name = "An Exceptionally Long Single Origin Name From The Highlands Of Somewhere Far", price = 12, acidity = 5.05, roast_level = "MEDIUM" }
tea = { kind = "Tea", name = "Linden", price = 9, type = "Herbal" }

[[producers]]
name = "a-producer-with-a-very-long-name-indeed-that-goes-on-and-on-and-on"
republish_wait_time = 0.01
make = [{ product = "long", time = 0.005 }]

[[producers]]
name = "tea maker with spaces in a name that is long enough to wrap twice over"
republish_wait_time = 0.01
make = [{ product = "tea", time = 0.005 }]

[[consumers]]
name = "a-consumer-with-a-very-long-name-indeed-that-goes-on-and-on-and-on"
retry_wait_time = 0.01
sessions = [[{ add = "long", quantity = 3 }], [{ add = "tea" }, { add = "long" }]]

[[consumers]]
name = "a consumer with spaces in its long name"
retry_wait_time = 0.01
sessions = [[{ add = "tea", quantity = 2 }, { add = "long" }], [{ add = "long" }]]
"""

_ESCAPE = re.compile(r"\x1b(\[[0-9;?]*[A-Za-z]|\][^\x07]*\x07|[()][A-Za-z0-9])")


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "long-names.toml"
    path.write_text(LONG_NAMES)
    return path


def _terminal(columns: int) -> tuple[int, int]:
    """A pseudo-terminal (master, slave) of 24 rows and ``columns`` columns."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    return master, slave


def _read_all(master: int, process: subprocess.Popen[bytes], timeout: float) -> str:
    """Everything written to the terminal until every writer closed it."""
    chunks = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if not ready:
            if process.poll() is not None:
                break
            continue
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: no writer left
            break
        if not data:
            break
        chunks.append(data)
    else:
        os.killpg(process.pid, signal.SIGKILL)
        raise AssertionError("the run did not end in time")
    return b"".join(chunks).decode(errors="replace")


def _lines(text: str) -> list[str]:
    """What a person reads: escapes gone, split at every line end or carriage return."""
    return [line for line in re.split(r"[\r\n]+", _ESCAPE.sub("", text)) if line]


def _environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR")}
    env["TERM"] = "xterm-256color"
    env.update(extra)
    return env


def _run_on_terminal(
    config: Path, columns: int, *, stdout: str = "terminal", env: dict[str, str] | None = None
) -> tuple[str, str, int]:
    """Run on a terminal; stdout on the same terminal, a pipe or a terminal of its own.

    Returns what the view's terminal got, what stdout got (the same text when
    it is that terminal) and the exit code.
    """
    master, slave = _terminal(columns)
    other: tuple[int, int] | None = _terminal(columns) if stdout == "other terminal" else None
    out: int | None = {"terminal": slave, "pipe": subprocess.PIPE}.get(stdout)
    if other is not None:
        out = other[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "mpmarket", "run", str(config)],
        stdin=slave,
        stdout=out,
        stderr=slave,
        env=env or _environment(),
        start_new_session=True,
    )
    os.close(slave)
    try:
        if other is not None:
            os.close(other[1])
        if stdout == "pipe":
            assert process.stdout is not None
            piped = process.stdout
            seen = _read_all(master, process, CLI_TIMEOUT_S)
            result = piped.read().decode()
        elif other is not None:
            result = _read_all(other[0], process, CLI_TIMEOUT_S)
            seen = _read_all(master, process, CLI_TIMEOUT_S)
        else:
            seen = result = _read_all(master, process, CLI_TIMEOUT_S)
        code = process.wait(CLI_TIMEOUT_S)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
        os.close(master)
        if other is not None:
            os.close(other[0])
    return seen, result, code


def _bought(text: str) -> Counter[str]:
    """The result lines a terminal shows (the summary table's heading is none)."""
    return Counter(
        line for line in _lines(text) if " bought " in line and not line.startswith(("┃", "│"))
    )


@pytest.fixture
def piped(config: Path) -> Counter[str]:
    """The run's lines with stdout to a pipe: the reference."""
    done = run_cli("run", config, "--quiet")
    assert done.returncode == 0, done.stderr
    lines = bought_lines(done.stdout)
    assert sum(lines.values()) == 9
    assert all(len(line) > 40 for line in lines)  # wider than the terminals below
    assert sum(len(line) > 80 for line in lines) >= 3
    return lines


@pytest.mark.parametrize("columns", [40, 80])
def test_result_lines_are_whole_on_a_terminal(
    config: Path, piped: Counter[str], columns: int
) -> None:
    _seen, result, code = _run_on_terminal(config, columns)
    assert code == 0, result
    assert _bought(result) == piped


def test_result_lines_are_whole_with_a_narrow_columns_setting(
    config: Path, piped: Counter[str]
) -> None:
    _seen, result, code = _run_on_terminal(config, 80, env=_environment(COLUMNS="20"))
    assert code == 0, result
    assert _bought(result) == piped


def test_stdout_a_pipe_gets_its_lines_untouched_and_the_terminal_none(
    config: Path, piped: Counter[str]
) -> None:
    seen, result, code = _run_on_terminal(config, 40, stdout="pipe")
    assert code == 0, seen
    assert "\x1b" not in result
    assert bought_lines(result) == piped
    assert _bought(seen) == Counter()  # the view's terminal: no result line


def test_stdout_another_terminal_gets_the_lines_not_the_view(
    config: Path, piped: Counter[str]
) -> None:
    seen, result, code = _run_on_terminal(config, 40, stdout="other terminal")
    assert code == 0, seen
    assert _bought(result) == piped
    assert _bought(seen) == Counter()
    assert "mpmarket run" in seen  # the view and the summary stay on stderr's


@pytest.mark.parametrize("columns", ["30", "60"])
def test_summary_table_rows_are_one_line_each_in_a_log(config: Path, columns: str) -> None:
    env = _environment(COLUMNS=columns)
    done = run_cli("run", config, env=env)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    for title, following in (("consumers", "producers"), ("producers", "mpmarket run")):
        start = next(i for i, line in enumerate(lines) if line.strip() == title)
        end = next(i for i, line in enumerate(lines) if i > start and line.strip() == following)
        rows = [line for line in lines[start:end] if line.startswith("│")]
        assert len(rows) == 3, lines[start:end]  # two agents and the total, a line each
    summary = lines[lines.index(next(x for x in lines if x.strip() == "mpmarket run")) :]
    assert len([line for line in summary if line.startswith("│")]) >= 11
    for line in lines:  # every line fits the width asked for
        assert len(line) <= int(columns) or line.startswith("mpmarket: "), line


def test_a_death_line_is_one_line_in_a_narrow_log(tmp_path: Path) -> None:
    """The line that tells an agent died is not cut to the console's width."""
    config = tmp_path / "dies.toml"
    config.write_text(
        LONG_NAMES.replace(
            'retry_wait_time = 0.01\nsessions = [[{ add = "tea", quantity = 2 }',
            (
                'retry_wait_time = 0.01\nsessions = [[{ add = "tea", quantity = 2 }, '
                '{ add = "unicorn" }'
            ),
        ).replace(
            'tea = { kind = "Tea"',
            'unicorn = { kind = "Product", name = "Unicorn", price = 1 }\ntea = { kind = "Tea"',
        )
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "mpmarket", "run", str(config), "--stall-timeout", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_environment(COLUMNS="30"),
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + CLI_TIMEOUT_S
        victim = None
        while victim is None and time.monotonic() < deadline:
            children = sorted(
                psutil.Process(process.pid).children(), key=lambda c: (c.create_time(), c.pid)
            )
            if len(children) >= 5:  # the server, two producers, two consumers
                victim = children[4]
            time.sleep(0.05)
        assert victim is not None
        time.sleep(0.5)  # it waits for a unicorn nobody makes
        victim.send_signal(signal.SIGKILL)
        _stdout, stderr = process.communicate(timeout=CLI_TIMEOUT_S)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        if process.poll() is None:
            process.communicate()
    assert process.returncode == 1, stderr
    assert re.search(
        r"^mpmarket: consumer a consumer with spaces in its long name killed by SIGKILL "
        r"after 0 of 2 sessions; 2 products of its cart went back on sale$",
        stderr,
        re.MULTILINE,
    ), stderr
