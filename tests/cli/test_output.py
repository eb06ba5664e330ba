"""An output destination that fails: every command stops in order, with a documented code.

Through the real path: the ``mpmarket`` command in a subprocess whose stdout
or stderr is a pipe whose reader goes away, a closed descriptor (``>&-``),
``/dev/full`` (ENOSPC), or an ASCII-only encoding with a product name that is
not ASCII. The rule (docs/usage.md, "When the output fails"): stdout's reader
gone, exit 141 quietly; stdout otherwise unwritable, one line and exit 1;
stderr failing changes nothing. Never a traceback, never "Exception
ignored", the --json report complete, no process left behind.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

from tests.helpers import CLI_TIMEOUT_S, bought_lines

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted(str(path) for path in (REPO / "configs").glob("*.toml"))
MPMARKET = f"{shlex.quote(sys.executable)} -m mpmarket"

# Long enough to be running still when its reader goes away.
LONG_RUN = ["run", "--producers", "3", "--consumers", "6", "--sessions", "400", "-q"]
SHORT_RUN = ["run", "--producers", "2", "--consumers", "3", "--sessions", "3"]

# A workload whose products are not all ASCII.
CAFE = textwrap.dedent(
    """\
    [market]
    queue_size_per_producer = 3

    [products]
    cafe = { kind = "Coffee", name = "Café", price = 3, acidity = 5.0, roast_level = "DARK" }
    tea = { kind = "Tea", name = "Linden", price = 9, type = "Herbal" }

    [[producers]]
    name = "maker"
    republish_wait_time = 0.01
    make = [ { product = "tea", quantity = 2, time = 0.01 }, { product = "cafe", time = 0.01 } ]

    [[consumers]]
    name = "alice"
    retry_wait_time = 0.01
    sessions = [ [ { add = "tea" } ], [ { add = "tea" } ], [ { add = "cafe" } ] ]
    """
)


def _no_python_noise(stderr: str) -> None:
    assert "Traceback" not in stderr, stderr
    assert "Exception ignored" not in stderr, stderr


def _shell(command: str, *, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``command`` under bash (for its redirections), bounded; stderr captured."""
    return subprocess.run(
        ["bash", "-c", command],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        env=env,
        start_new_session=True,
    )


def _run_tree_gone(pids: list[psutil.Process]) -> None:
    _gone, alive = psutil.wait_procs(pids, timeout=10)
    assert alive == [], f"left behind: {alive}"


def _report(path: Path) -> dict:
    document = json.loads(path.read_text())
    assert document["orders"] is not None and "books" in document  # complete
    return document


@pytest.mark.parametrize("per_process", [1, 3])
def test_a_run_whose_reader_goes_stops_quietly_in_order_and_writes_its_report(
    tmp_path, per_process
):
    report = tmp_path / "r.json"
    args = [*LONG_RUN, "--json", str(report), "--agents-per-process", str(per_process)]
    process = subprocess.Popen(
        [sys.executable, "-m", "mpmarket", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    tree: list[psutil.Process] = []
    try:
        assert " bought " in process.stdout.readline()
        tree = psutil.Process(process.pid).children(recursive=True)
        process.stdout.close()  # the reader goes, as `| head -1` does
        _stdout, stderr = process.communicate(timeout=CLI_TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 141, stderr
    _no_python_noise(stderr)
    assert "stdout's reader went away" in stderr and "error" not in stderr
    document = _report(report)
    assert document["exit_code"] == 141 and document["stopped_by"] == "stdout"
    assert not document["interrupted"] and document["products_bought"] >= 1
    assert document["books"]["closed"]  # the market was closed: an orderly stop
    _run_tree_gone(tree)


@pytest.mark.parametrize(
    ("redirect", "message"),
    [(">&-", "it is closed"), (">/dev/full", "No space left on device")],
)
def test_a_run_whose_stdout_cannot_be_written_says_so_and_exits_1(tmp_path, redirect, message):
    report = tmp_path / "r.json"
    args = " ".join(SHORT_RUN)
    ran = _shell(f"{MPMARKET} {args} --json {report} {redirect}")
    assert ran.returncode == 1, ran.stderr
    _no_python_noise(ran.stderr)
    assert f"mpmarket: error: cannot write to stdout: {message}" in ran.stderr
    assert ran.stderr.count("cannot write to stdout") == 1  # one line
    assert "products bought" in ran.stderr  # the summary still printed
    document = _report(report)
    assert document["exit_code"] == 1 and document["stopped_by"] == "stdout"
    assert any("cannot write to stdout" in failure for failure in document["failures"])


def test_a_run_whose_stdout_cannot_encode_a_product_name_says_so_and_exits_1(tmp_path):
    config = tmp_path / "cafe.toml"
    config.write_text(CAFE, encoding="utf-8")
    report = tmp_path / "r.json"
    env = {**os.environ, "PYTHONIOENCODING": "ascii"}
    ran = _shell(f"{MPMARKET} run {config} --json {report} | cat", env=env)
    assert ran.returncode == 0  # cat's
    _no_python_noise(ran.stderr)
    # stderr is ASCII too: Python escapes what it cannot encode there ('\xe9').
    assert "its encoding (ascii) has no '\\xe9'; set PYTHONIOENCODING=utf-8" in ran.stderr
    assert "Linden" in ran.stdout  # what could be written was
    document = _report(report)
    assert document["exit_code"] == 1 and document["stopped_by"] == "stdout"
    # The same with LANG=C: Python reads it as UTF-8 (PEP 538), so all is printed.
    ran = _shell(f"{MPMARKET} run {config}", env={**os.environ, "LANG": "C", "LC_ALL": "C"})
    assert ran.returncode == 0, ran.stderr
    assert "Café" in ran.stdout


@pytest.mark.parametrize(
    "redirect", ["2>&-", "2>/dev/full", "2> >(head -c 1 >/dev/null)", "2>&1 >/dev/null | true"]
)
def test_a_run_whose_stderr_fails_goes_on_to_its_end(tmp_path, redirect):
    report = tmp_path / "r.json"
    out = tmp_path / "out.txt"
    args = " ".join(SHORT_RUN)
    if "|" in redirect:  # stdout to the file, stderr into a pipe nobody reads
        command = f"{MPMARKET} {args} --json {report} 2>&1 >{out} | true"
    else:
        command = f"{MPMARKET} {args} --json {report} >{out} {redirect}"
    ran = _shell(f"{command}; echo $? >{tmp_path / 'code'}")
    assert (tmp_path / "code").read_text().split()[0] in ("0",), ran.stderr
    document = _report(report)
    assert document["exit_code"] == 0 and document["stopped_by"] is None
    lines = bought_lines(out.read_text())
    assert sum(lines.values()) == document["products_bought"] > 0


def test_a_report_file_that_cannot_be_written_is_one_line_and_exit_1(tmp_path):
    args = " ".join(SHORT_RUN)
    ran = _shell(f"{MPMARKET} {args} -q --json /dev/full --html {tmp_path}/missing/r.html")
    assert ran.returncode == 1, ran.stderr
    _no_python_noise(ran.stderr)
    assert "cannot write /dev/full: No space left on device" in ran.stderr
    assert f"cannot write {tmp_path}/missing/r.html: No such file or directory" in ran.stderr
    assert bought_lines(ran.stdout)  # every line printed
    # A report is replaced whole or not at all: no temporary file is left.
    assert [p.name for p in tmp_path.iterdir()] == []


# Every command that writes stdout, with what it writes there.
COMMANDS = {
    "validate": ["validate", *CONFIGS],
    "simulate": ["simulate", "--producers", "4", "--consumers", "8"],
    "gen": ["gen", "-"],
    "stress": ["stress", "--duration", "0.5", "-q"],
    "run": [*SHORT_RUN, "-q"],
}


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_keeps_the_rule_when_stdout_fails(tmp_path, command):
    args = " ".join(shlex.quote(arg) for arg in COMMANDS[command])
    # The reader gone before the first line: read end closed at once.
    process = subprocess.Popen(
        [sys.executable, "-m", "mpmarket", *COMMANDS[command]],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    process.stdout.close()
    try:
        _stdout, stderr = process.communicate(timeout=CLI_TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 141, stderr
    _no_python_noise(stderr)
    assert "error" not in stderr
    for redirect, message in [(">&-", "it is closed"), (">/dev/full", "No space left on device")]:
        ran = _shell(f"{MPMARKET} {args} {redirect}")
        assert ran.returncode == 1, (redirect, ran.stderr)
        _no_python_noise(ran.stderr)
        assert ran.stderr.count(f"cannot write to stdout: {message}") == 1, ran.stderr
