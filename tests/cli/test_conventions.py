"""Conventions people type without thinking (issue 17, section 4), through the real CLI.

``gen -o FILE``; ``-`` as a workload read from stdin (run, simulate,
validate); ``--json -`` / ``--html -`` as a report on stdout (run, stress,
bench); ``-h`` on every command; ``NO_COLOR``; ``--`` before a file whose
name starts with a dash. Each test runs ``python -m mpmarket`` in a
subprocess with a timeout (docs/usage.md, "Conventions").
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mpmarket.cli.main import COMMANDS
from tests.helpers import CLI_TIMEOUT_S, bought_lines

REPO = Path(__file__).resolve().parents[2]
SMALL = ["-p", "2", "-c", "3", "--sessions", "2", "--seed", "5"]
# A colour's SGR code (30-38, 90-97, 40-48, 100-107), alone or after other codes.
COLOUR = re.compile(r"\x1b\[(?:[0-9;]*;)?(?:3[0-8]|9[0-7]|4[0-8]|10[0-7])(?:;[0-9;]*)?m")


def mpmarket(
    *args: str | Path,
    stdin: str | None = None,
    stdout: int | None = subprocess.PIPE,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m mpmarket ARGS`` with ``stdin`` as its input; killed (group) on timeout."""
    command = [sys.executable, "-m", "mpmarket", *map(str, args)]
    with subprocess.Popen(
        command,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=cwd,
        start_new_session=True,
    ) as process:
        try:
            out, err = process.communicate(stdin, timeout=CLI_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise
        return subprocess.CompletedProcess(command, process.returncode, out or "", err)


def generated(*args: str) -> str:
    result = mpmarket("gen", "-", *SMALL, *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def assert_one_clean_line(stderr: str, *needles: str) -> None:
    assert "Traceback" not in stderr
    for needle in needles:
        assert needle in stderr, stderr


# -- gen -o / --output -------------------------------------------------------


@pytest.mark.parametrize("flag", ["-o", "--output"])
def test_gen_writes_the_file_named_by_o_as_by_the_positional(tmp_path, flag):
    by_option = tmp_path / "option.toml"
    by_argument = tmp_path / "argument.toml"
    assert mpmarket("gen", flag, by_option, *SMALL).returncode == 0
    assert mpmarket("gen", by_argument, *SMALL).returncode == 0
    assert by_option.read_text() == by_argument.read_text() != ""


def test_gen_o_dash_is_stdout():
    result = mpmarket("gen", "-o", "-", *SMALL, "--format", "course")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["producers"]


def test_gen_output_given_twice_or_never_is_a_usage_error(tmp_path):
    both = mpmarket("gen", tmp_path / "a.toml", "-o", tmp_path / "b.toml")
    assert both.returncode == 2
    assert_one_clean_line(both.stderr, "OUTPUT", "-o/--output", "not both")
    assert not (tmp_path / "a.toml").exists() and not (tmp_path / "b.toml").exists()
    neither = mpmarket("gen")
    assert neither.returncode == 2
    assert_one_clean_line(neither.stderr, "missing OUTPUT")


# -- a workload from stdin -----------------------------------------------------


@pytest.mark.parametrize("file_format", ["toml", "course"])
def test_run_dash_reads_the_workload_from_stdin_in_either_format(tmp_path, file_format):
    text = generated("--format", file_format)
    saved = tmp_path / ("w.toml" if file_format == "toml" else "w.json")
    saved.write_text(text)
    from_stdin = mpmarket("run", "-", "-q", stdin=text)
    from_file = mpmarket("run", saved, "-q")
    assert from_stdin.returncode == 0, from_stdin.stderr
    assert from_file.returncode == 0, from_file.stderr
    assert bought_lines(from_stdin.stdout) == bought_lines(from_file.stdout)
    assert bought_lines(from_stdin.stdout)


def test_simulate_and_validate_read_stdin_and_name_it(tmp_path):
    text = generated()
    simulated = mpmarket("simulate", "-", stdin=text)
    assert simulated.returncode == 0, simulated.stderr
    assert "ideal makespan" in simulated.stdout
    validated = mpmarket("validate", "-", REPO / "configs" / "busy-market.toml", stdin=text)
    assert validated.returncode == 0, validated.stderr
    assert validated.stdout.startswith("<stdin>: 2 producers, 3 consumers")
    assert "busy-market.toml: " in validated.stdout


@pytest.mark.parametrize("command", ["run", "simulate", "validate"])
@pytest.mark.parametrize(
    ("stdin", "expected"),
    [
        ('{"products": ', "<stdin>: expected valid JSON"),  # sniffed as JSON
        ("[market\n", "<stdin>: expected valid TOML"),  # sniffed as TOML
        ("", "<stdin>: products: expected a value (missing)"),  # empty: TOML with nothing
        ('\ufeff{"products": {}}', "<stdin>: producers: expected a value"),  # a BOM, then JSON
    ],
)
def test_a_bad_workload_on_stdin_is_one_line_naming_stdin(command, stdin, expected):
    result = mpmarket(command, "-", stdin=stdin)
    assert result.returncode == 2
    assert_one_clean_line(result.stderr, expected)
    assert result.stdout == ""


def test_stdin_not_utf8_or_closed_is_one_line():
    command = [sys.executable, "-m", "mpmarket", "validate", "-"]
    binary = subprocess.run(
        command, input=b"\xff\xfe[", capture_output=True, timeout=CLI_TIMEOUT_S, check=False
    )
    assert binary.returncode == 2
    assert_one_clean_line(binary.stderr.decode(), "<stdin>: expected a readable UTF-8")
    closed = subprocess.run(
        ["sh", "-c", 'exec "$@" <&-', "sh", *command],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )
    assert closed.returncode == 2
    assert_one_clean_line(closed.stderr, "<stdin>: expected a workload on stdin")


def test_validate_refuses_stdin_twice():
    result = mpmarket("validate", "-", "-", stdin=generated())
    assert result.returncode == 2
    assert_one_clean_line(result.stderr, "more than once")


def test_double_dash_ends_the_options(tmp_path):
    odd = tmp_path / "-odd.toml"
    odd.write_text(generated())
    without = mpmarket("validate", odd.name, cwd=tmp_path)
    assert without.returncode == 2  # click reads it as an option
    result = mpmarket("validate", "--", odd.name, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("-odd.toml: 2 producers")


# -- a report on stdout ------------------------------------------------------


def test_run_json_dash_is_stdouts_only_content():
    result = mpmarket("run", *SMALL, "--json", "-")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)  # the whole of stdout: no result line before it
    assert report["exit_code"] == 0 and report["orders"]
    assert report["products_bought"] == sum(len(o["products"]) for o in report["orders"])
    assert "products bought" in result.stderr  # the summary stays on stderr


def test_run_html_dash_writes_the_page_on_stdout_and_json_to_its_file(tmp_path):
    result = mpmarket("run", *SMALL, "-q", "--html", "-", "--json", tmp_path / "r.json")
    assert result.returncode == 0, result.stderr
    assert result.stdout.lstrip().lower().startswith("<!doctype html>")
    assert json.loads((tmp_path / "r.json").read_text())["exit_code"] == 0


@pytest.mark.parametrize("command", [["run", *SMALL], ["stress", "--duration", "0.2"]])
def test_json_and_html_both_on_stdout_is_a_usage_error(command):
    result = mpmarket(*command, "--json", "-", "--html", "-")
    assert result.returncode == 2
    assert_one_clean_line(result.stderr, "--json - and --html -")
    assert result.stdout == ""


def test_stress_json_dash_puts_the_verdict_on_stderr():
    result = mpmarket("stress", "-p", "2", "-c", "2", "--duration", "0.3", "-q", "--json", "-")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["stress"]["ok"] is True
    assert "stress OK: " in result.stderr


def test_bench_json_dash_writes_the_figures_on_stdout():
    result = mpmarket("bench", "floor", "--clients", "1", "--calls", "50", "--repeat", "1",
                      "--json", "-")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)


@pytest.mark.parametrize(
    "command",
    [
        ["run", *SMALL, "-q", "--json", "-"],
        ["stress", "-p", "1", "-c", "1", "--duration", "0.2", "-q", "--json", "-"],
        ["gen", "-o", "-", *SMALL],
    ],
)
def test_a_report_on_stdout_whose_reader_is_gone_exits_141_quietly(command):
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody will read it: the write gets EPIPE
    try:
        result = mpmarket(*command, stdout=write_end)
    finally:
        os.close(write_end)
    assert result.returncode == 141, result.stderr
    assert "Traceback" not in result.stderr and "error" not in result.stderr


@pytest.mark.parametrize(
    "command",
    [["run", *SMALL, "-q", "--json", "-"], ["stress", "--duration", "0.2", "-q", "--json", "-"]],
)
def test_a_report_on_a_closed_stdout_is_one_line_and_exit_1(command):
    result = subprocess.run(
        ["sh", "-c", 'exec "$@" >&-', "sh", sys.executable, "-m", "mpmarket", *command],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 1
    assert_one_clean_line(result.stderr, "cannot write the report to stdout: it is closed")


# -- what every command takes ----------------------------------------------------


@pytest.mark.parametrize(
    "command", [[], *([name] for name in sorted(COMMANDS)), ["bench", "floor"]]
)
def test_h_is_help_on_every_command(command):
    short = mpmarket(*command, "-h")
    assert short.returncode == 0, short.stderr
    assert short.stdout == mpmarket(*command, "--help").stdout
    assert short.stdout.startswith("Usage: mpmarket")


def test_version():
    result = mpmarket("--version")
    assert result.returncode == 0 and result.stdout.startswith("mpmarket, version ")


def test_no_color_drops_colours_even_when_colour_is_forced(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    env = {**os.environ, "FORCE_COLOR": "1"}
    env.pop("NO_COLOR", None)
    forced = mpmarket("run", bad, env=env)
    assert forced.returncode == 2 and COLOUR.search(forced.stderr)  # the check can see colour
    plain = mpmarket("run", bad, env={**env, "NO_COLOR": "1"})
    assert plain.returncode == 2 and not COLOUR.search(plain.stderr), repr(plain.stderr)
    assert "mpmarket: error:" in plain.stderr
