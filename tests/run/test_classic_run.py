"""``mpmarket run --market classic``: the course's design as real processes, end to end.

The same agents and result lines as mpmarket's own market, on a stock
manager server whose agents sleep their waits. The tests of ``run`` that
apply to it, in short: the course's cases (the fast ones by default, all ten
with MPMARKET_SLOW=1), exact lines, books, the report and the log, packed
agents, other start methods, a killed consumer's cart, a killed, frozen or
stalled server, a killed run. Faults use the helpers of ``test_faults``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import psutil
import pytest

from mpmarket.core.generate import generate
from mpmarket.core.load import load_workload
from mpmarket.core.workload import expected_purchases, purchase_line
from mpmarket.run.local import LocalRun
from tests.conftest import CONFORMANCE_DIR
from tests.helpers import bought_lines, run_cli
from tests.run.test_cli_run import TOML_WORKLOAD
from tests.run.test_faults import (
    DEADLOCK_WORKLOAD,
    LONG_RUN,
    VICTIM_WORKLOAD,
    _children,
    _cleanup,
    _finish,
    _start,
    _wait_for,
)

CLASSIC = ("--market", "classic")

# -- the course's ten cases -------------------------------------------------------

CASES = [f"{n:02d}" for n in range(1, 11)]
# The quick ones (1.5 to 3.5 s each on the classic market): in the default suite.
FAST_CASES = ("01", "06", "09")
CASE_TIMEOUT_S = 150


def _slow() -> bool:
    return os.environ.get("MPMARKET_SLOW") == "1"


@pytest.fixture(scope="module")
def classic_course_runs():
    """Start every case that runs at once; case -> (returncode, stdout, stderr)."""
    if not CONFORMANCE_DIR.is_dir():
        pytest.skip(f"course cases not found at {CONFORMANCE_DIR}")
    chosen = CASES if _slow() else FAST_CASES
    processes = {
        case: subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mpmarket",
                "run",
                CONFORMANCE_DIR / f"{case}.in",
                *CLASSIC,
                "-q",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        for case in chosen
        if (CONFORMANCE_DIR / f"{case}.in").exists()
    }
    results = {}
    try:
        for case, process in processes.items():
            stdout, stderr = process.communicate(timeout=CASE_TIMEOUT_S)
            results[case] = (process.returncode, stdout, stderr)
    finally:
        for process in processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.communicate()
    return results


@pytest.mark.timeout(CASE_TIMEOUT_S + 30)
@pytest.mark.parametrize(
    "case",
    [case if case in FAST_CASES else pytest.param(case, marks=pytest.mark.slow) for case in CASES],
)
def test_course_case_on_the_classic_market(classic_course_runs, case):
    if case not in classic_course_runs:
        pytest.skip(f"{case}.in not present")
    returncode, stdout, stderr = classic_course_runs[case]
    assert returncode == 0, stderr
    expected = Counter(Path(CONFORMANCE_DIR / f"{case}.ref.out").read_text().splitlines())
    assert bought_lines(stdout) == expected  # whole lines
    assert set(stdout.splitlines()) == set(bought_lines(stdout))


# -- what run does, on the classic market -------------------------------------------


def test_a_generated_run_prints_exactly_its_lines_and_balances_its_books(tmp_path):
    report_path = tmp_path / "report.json"
    result = run_cli(
        "run", "-p", "3", "-c", "5", "--seed", "7", *CLASSIC, "--quiet", "--json", report_path
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert bought_lines(result.stdout) == expected_purchases(generate(3, 5, seed=7))
    report = json.loads(report_path.read_text())
    assert report["settings"]["market"] == "classic"
    books = report["books"]
    assert books["published"] == books["on_sale"] + books["in_carts"] + books["ordered"]
    assert books["ordered"] == report["products_bought"] and books["closed"]


def test_toml_config_report_and_the_operation_log(tmp_path):
    config = tmp_path / "market.toml"
    config.write_text(TOML_WORKLOAD)
    report_path = tmp_path / "report.json"
    log_path = tmp_path / "operations.log"
    result = run_cli("run", config, *CLASSIC, "--json", report_path, "--log-file", log_path)
    assert result.returncode == 0, result.stderr
    expected = expected_purchases(load_workload(config))
    assert bought_lines(result.stdout) == expected
    assert "products bought" in result.stderr and "balanced" in result.stderr
    report = json.loads(report_path.read_text())
    agents = {agent["name"]: agent for agent in report["agents"]}
    assert agents["alice"]["sessions"] == 2 and agents["bob"]["sessions"] == 1
    books = report["books"]
    assert agents["tea-maker"]["published"] + agents["roaster"]["published"] == books["published"]
    assert agents["tea-maker"]["sold"] == sum(n for line, n in expected.items() if "Linden" in line)
    assert report["violations"] == []
    log = log_path.read_text()
    assert " add_to_cart(" in log and " place_order(" in log  # the course's calls, one by one
    assert " add_many(" not in log


def test_packed_agents_buy_exactly_their_sessions():
    workload = generate(4, 7, sessions=3, seed=3)
    run = LocalRun(workload, agents_per_process=3, market="classic", audit=True)
    report = run.run()
    assert report.ok, (report.failures, report.deaths, report.violations)
    assert sorted(run.agent_processes(alive=False).values()) == [1, 1, 3, 3, 3]
    bought = Counter(
        purchase_line(consumer, product)
        for consumer, products in report.orders
        for product in products
    )
    assert bought == expected_purchases(workload)
    assert report.books is not None and report.books.balanced


@pytest.mark.parametrize("start_method", ["spawn", "forkserver"])
def test_other_start_methods(start_method, tmp_path):
    config = tmp_path / "market.toml"
    config.write_text(TOML_WORKLOAD)
    result = run_cli("run", config, *CLASSIC, "--start-method", start_method, "--quiet")
    assert result.returncode == 0, result.stderr
    assert bought_lines(result.stdout) == expected_purchases(load_workload(config))


def test_the_classic_market_is_not_served_for_connect():
    refused = run_cli("run", *CLASSIC, "--connect", "127.0.0.1:7151")
    assert refused.returncode == 2
    assert "--market classic runs its own server: not with --connect" in refused.stderr
    with pytest.raises(ValueError, match="market must be one of"):
        LocalRun(generate(1, 1), market="bazaar")


# -- faults --------------------------------------------------------------------------


def test_a_killed_consumer_gives_its_cart_back_and_the_others_finish(tmp_path):
    config = tmp_path / "victim.toml"
    config.write_text(VICTIM_WORKLOAD)
    log = tmp_path / "operations.log"
    report_path = tmp_path / "report.json"
    process = _start(config, *CLASSIC, "--quiet", "--log-file", log, "--json", report_path)
    tree: list[psutil.Process] = []
    try:
        # Only the victim asks for a unicorn, and only once it holds three teas.
        _wait_for(
            lambda: (
                log.exists() and "Product(name='Unicorn', price=1000)) -> False" in log.read_text()
            ),
            20,
            "the victim to hold three teas",
        )
        tree = _children(process)
        tree[1 + 1 + 0].send_signal(signal.SIGKILL)  # server, tea-maker, then the victim
        stdout, stderr, _ = _finish(process, 60)
    finally:
        _cleanup(process, tree)
    assert process.returncode == 1, stderr
    assert "consumer victim killed by SIGKILL after 0 of 1 sessions; 3 products" in stderr
    expected = expected_purchases(load_workload(config))
    for line in list(expected):
        if line.startswith("victim "):
            del expected[line]
    assert bought_lines(stdout) == expected
    report = json.loads(report_path.read_text())
    assert [(d["name"], d["released"]) for d in report["deaths"]] == [("victim", 3)]
    books = report["books"]
    assert books["published"] == books["on_sale"] + books["in_carts"] + books["ordered"]
    assert books["in_carts"] == 0 and report["violations"] == []


def test_a_killed_server_ends_the_run_with_code_4():
    process = _start(*LONG_RUN, *CLASSIC, "--quiet")
    tree: list[psutil.Process] = []
    try:
        assert " bought " in process.stdout.readline()
        tree = _children(process)
        tree[0].send_signal(signal.SIGKILL)  # the server
        _stdout, stderr, _took = _finish(process, 30)
        assert process.returncode == 4, stderr
        assert "the market server died (killed by SIGKILL)" in stderr
        assert "Traceback" not in stderr
        _gone, alive = psutil.wait_procs(tree, timeout=5)
        assert alive == []
    finally:
        _cleanup(process, tree)


def test_a_frozen_server_is_noticed_by_the_runner_and_the_run_ends_with_code_4():
    """The agents' stock proxies would wait for good; the runner's reads with a timeout."""
    process = _start(*LONG_RUN, *CLASSIC, "--quiet")
    tree: list[psutil.Process] = []
    try:
        assert " bought " in process.stdout.readline()
        tree = _children(process)
        tree[0].send_signal(signal.SIGSTOP)
        _stdout, stderr, _took = _finish(process, 40)
        assert process.returncode == 4, stderr
        assert "did not answer within" in stderr
        _gone, alive = psutil.wait_procs(tree, timeout=5)
        assert alive == []
    finally:
        _cleanup(process, tree)


def test_a_deadlock_is_stopped_and_explained_from_the_refusals(tmp_path):
    config = tmp_path / "deadlock.toml"
    config.write_text(DEADLOCK_WORKLOAD)
    process = _start(config, *CLASSIC, "--quiet", "--stall-timeout", "1")
    try:
        stdout, stderr, _ = _finish(process, 30)
    finally:
        _cleanup(process, [])
    assert process.returncode == 3, stderr
    assert stdout == ""
    assert "cons1 waits for Tea(name='Linden', price=9, type='Herbal') made by prod1" in stderr
    assert (
        "prod1 has 2 of 2 slots taken by Coffee(name='Arabica', price=3, acidity=5.02, "
        "roast_level='LIGHT') that no remaining consumer wants"
    ) in stderr


def test_a_killed_run_takes_its_server_and_agents_down():
    process = _start(*LONG_RUN, *CLASSIC, "--quiet")
    tree: list[psutil.Process] = []
    try:
        assert " bought " in process.stdout.readline()
        tree = _children(process)
        assert len(tree) >= 1 + 3 + 6
        process.kill()
        process.communicate(timeout=10)  # and its pipes closed
        _gone, alive = psutil.wait_procs(tree, timeout=20)
        assert alive == [], f"orphans: {alive}"
    finally:
        _cleanup(process, tree)
