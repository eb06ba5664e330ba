"""``mpmarket run`` end to end: the CLI as a subprocess, real processes."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from mpmarket.core.generate import generate
from mpmarket.core.load import load_workload
from mpmarket.core.workload import expected_purchases, purchase_line
from mpmarket.run.local import LocalRun
from mpmarket.run.report import RunObserver
from tests.helpers import bought_lines, run_cli

TOML_WORKLOAD = """
[market]
queue_size_per_producer = 2

[products]
linden = { kind = "Tea", name = "Linden", price = 9, type = "Herbal" }
arabica = { kind = "Coffee", name = "Arabica", price = 3, acidity = 5.02, roast_level = "LIGHT" }

[[producers]]
name = "tea-maker"
republish_wait_time = 0.01
make = [{ product = "linden", quantity = 1, time = 0.001 }]

[[producers]]
name = "roaster"
republish_wait_time = 0.01
make = [{ product = "arabica", quantity = 2, time = 0.002 }]

[[consumers]]
name = "alice"
retry_wait_time = 0.01
sessions = [
  [{ add = "linden", quantity = 3 }, { add = "arabica" }, { remove = "linden" }],
  [{ add = "arabica", quantity = 4 }],
]

[[consumers]]
name = "bob"
retry_wait_time = 0.01
sessions = [[{ add = "linden", quantity = 2 }, { remove = "linden", quantity = 5 }]]
"""


def test_generated_run_prints_exactly_the_expected_lines():
    result = run_cli("run", "--producers", "3", "--consumers", "5", "--seed", "7", "--quiet")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert bought_lines(result.stdout) == expected_purchases(generate(3, 5, seed=7))
    assert set(result.stdout.splitlines()) == set(bought_lines(result.stdout))


def test_default_run_finishes_and_prints_a_summary():
    result = run_cli("run")
    assert result.returncode == 0, result.stderr
    assert bought_lines(result.stdout) == expected_purchases(generate(4, 8))
    assert "products bought" in result.stderr


@pytest.mark.parametrize("start_method", ["spawn", "forkserver"])
def test_other_start_methods(start_method, tmp_path):
    config = tmp_path / "market.toml"
    config.write_text(TOML_WORKLOAD)
    result = run_cli("run", config, "--start-method", start_method, "--quiet")
    assert result.returncode == 0, result.stderr
    assert bought_lines(result.stdout) == expected_purchases(load_workload(config))


def test_agents_packed_several_per_process_buy_exactly_their_sessions():
    workload = generate(4, 7, sessions=3, seed=3)
    attached: list[tuple[str, str]] = []

    class SeeWhoIsAttached(RunObserver):
        def on_started(self, producers: int, consumers: int) -> None:
            assert run._market is not None  # the runner's own connection
            attached.extend((agent.name, agent.role) for agent in run._market.agents())

    run = LocalRun(workload, agents_per_process=3, observer=SeeWhoIsAttached())
    report = run.run()
    assert report.ok, (report.failures, report.deaths)
    # A connection per agent, under the agent's own name.
    expected = {(spec.name, "producer") for spec in workload.producers}
    expected |= {(spec.name, "consumer") for spec in workload.consumers}
    assert set(attached) - {("mpmarket run", "runner")} == expected
    # Producers 3 + 1, consumers 3 + 3 + 1: five processes, packed by role.
    assert sorted(run.agent_processes(alive=False).values()) == [1, 1, 3, 3, 3]
    bought = Counter(
        purchase_line(consumer, product)
        for consumer, products in report.orders
        for product in products
    )
    assert bought == expected_purchases(workload)
    consumers = [entry for entry in report.agents if entry["role"] == "consumer"]
    assert [entry["sessions"] for entry in consumers] == [3] * 7  # each its own stats
    assert sum(entry["published"] for entry in report.agents if entry["role"] == "producer") >= sum(
        entry["bought"] for entry in consumers
    )


def test_agents_per_process_through_the_command(tmp_path):
    report_path = tmp_path / "report.json"
    result = run_cli(
        "run", "-p", "2", "-c", "5", "--agents-per-process", "4", "--json", report_path
    )
    assert result.returncode == 0, result.stderr
    assert bought_lines(result.stdout) == expected_purchases(generate(2, 5))
    assert "3 (up to 4 agents each)" in result.stderr  # one producer process, two consumer ones
    assert json.loads(report_path.read_text())["settings"]["agents_per_process"] == 4
    refused = run_cli("run", "--agents-per-process", "0")
    assert refused.returncode == 2
    assert "Invalid value for '--agents-per-process'" in refused.stderr


def test_forkserver_preloads_the_modules_the_run_imported():
    """Without it every agent imported mpmarket, click and rich again, one after the other."""
    import multiprocessing.forkserver

    import mpmarket.cli.run  # noqa: F401  (what `mpmarket run` has imported)
    from mpmarket.proc.context import process_context

    process_context("forkserver")
    preload = multiprocessing.forkserver._forkserver._preload_modules
    assert {"mpmarket.cli.run", "mpmarket.run.local", "mpmarket.core.agents"} <= set(preload)


def test_toml_config_json_report_and_operation_log(tmp_path):
    config = tmp_path / "market.toml"
    config.write_text(TOML_WORKLOAD)
    report_path = tmp_path / "report.json"
    log_path = tmp_path / "operations.log"
    result = run_cli("run", config, "--json", report_path, "--log-file", log_path)
    assert result.returncode == 0, result.stderr
    expected = expected_purchases(load_workload(config))
    assert bought_lines(result.stdout) == expected
    assert sum(expected.values()) == 2 + 1 + 4 + 0

    report = json.loads(report_path.read_text())
    assert report["version"] == 1 and report["exit_code"] == 0
    assert report["products_bought"] == sum(expected.values())
    from_report = [
        f"{order['consumer']} bought {product}"
        for order in report["orders"]
        for product in order["products"]
    ]
    assert sorted(from_report) == sorted(result.stdout.splitlines())
    books = report["books"]
    assert books["published"] == books["on_sale"] + books["in_carts"] + books["ordered"]
    assert all(report["timings"][k] >= 0 for k in ("startup_s", "market_s", "shutdown_s"))
    per_consumer = Counter(line.split(" bought ")[0] for line in result.stdout.splitlines())
    agents = {agent["name"]: agent for agent in report["agents"]}
    assert set(agents) == {"tea-maker", "roaster", "alice", "bob"}
    assert {n: a["bought"] for n, a in agents.items() if a["role"] == "consumer"} == {
        "alice": per_consumer["alice"],
        "bob": per_consumer["bob"],
    }
    assert agents["alice"]["sessions"] == 2 and agents["bob"]["sessions"] == 1
    assert agents["tea-maker"]["published"] + agents["roaster"]["published"] == books["published"]
    assert agents["tea-maker"]["sold"] == sum(n for line, n in expected.items() if "Linden" in line)
    assert agents["roaster"]["sold"] == sum(n for line, n in expected.items() if "Arabica" in line)
    assert len(report["workload_digest"]) == 64
    assert report["settings"]["queue_size_per_producer"] == 2
    assert report["started_utc"].endswith("Z") and report["ended_utc"] >= report["started_utc"]

    log_lines = log_path.read_text().splitlines()
    assert any(" place_order(" in line for line in log_lines)
    assert all(line[:4].isdigit() and "Z " in line[:30] for line in log_lines)


@pytest.mark.parametrize(
    ("content", "suffix", "field"),
    [
        ("this is not json", ".json", "expected valid JSON"),
        ("[market\n", ".toml", "expected valid TOML"),
        (
            '{"products": {}, "producers": [], "consumers": [{"name": "c", "retry_wait_time": 0.1, '
            '"carts": [[{"type": "add", "product": "nope", "quantity": 1}]]}]}',
            ".json",
            "consumers[0].carts[0][0].product: expected a product id",
        ),
        (
            '{"products": {"a": {"product_type": "Mate", "name": "x", "price": 1}}, '
            '"producers": [], "consumers": []}',
            ".json",
            "products.a.product_type: expected a product type",
        ),
        (
            '{"products": {}, "producers": [{"name": "p", "products": [], '
            '"republish_wait_time": -1}], "consumers": []}',
            ".json",
            "producers[0].republish_wait_time: expected a non-negative number",
        ),
        (
            '{"products": {}, "producers": [{"products": [], "republish_wait_time": 1}], '
            '"consumers": []}',
            ".json",
            "producers[0].name: expected a value (missing)",
        ),
    ],
)
def test_a_bad_config_is_one_line_and_exit_2(tmp_path, content, suffix, field):
    config = tmp_path / f"bad{suffix}"
    config.write_text(content)
    result = run_cli("run", config)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"mpmarket: error: {config}: ")
    assert field in lines[0]
    assert "Traceback" not in result.stderr


def test_a_missing_config_and_bad_flags_exit_2(tmp_path):
    missing = run_cli("run", tmp_path / "nothing.toml")
    assert missing.returncode == 2 and "expected an existing file" in missing.stderr
    flags = run_cli("run", "--producers", "0")
    assert flags.returncode == 2 and "Traceback" not in flags.stderr
    both = run_cli("run", tmp_path / "x.toml", "--producers", "2")
    assert both.returncode == 2


def test_version_and_help():
    assert run_cli("--version").stdout.startswith("mpmarket, version ")
    help_text = run_cli("run", "--help").stdout
    assert "Exit codes" in help_text and "130" in help_text


def test_plain_progress_and_an_html_report_when_stderr_is_not_a_terminal(tmp_path):
    html_path = tmp_path / "report.html"
    result = run_cli("run", "--producers", "2", "--consumers", "3", "--html", html_path)
    assert result.returncode == 0, result.stderr
    total = sum(expected_purchases(generate(2, 3)).values())
    progress = [line for line in result.stderr.splitlines() if line.startswith("mpmarket: ")]
    assert progress and f"bought {total}/{total} (100%)" in progress[-1]
    assert "\x1b[" not in result.stderr  # no terminal codes into a file or a pipe
    page = html_path.read_text()
    assert page.count("<svg") == 6 and "<script" not in page and "http" not in page


def test_the_operation_log_rotates_and_its_level_filters(tmp_path):
    log_path = tmp_path / "ops.log"
    result = run_cli(
        "run", "--producers", "3", "--consumers", "6", "--sessions", "20", "--quiet",
        "--log-file", log_path, "--log-max-bytes", "4096", "--log-backups", "2",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rotated = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("ops.log"))
    assert rotated == ["ops.log", "ops.log.1", "ops.log.2"]
    assert all(p.stat().st_size <= 4096 + 512 for p in tmp_path.glob("ops.log*"))
    quiet_log = tmp_path / "warnings.log"
    result = run_cli("run", "--quiet", "--log-file", quiet_log, "--log-level", "warning")
    assert result.returncode == 0, result.stderr
    assert not quiet_log.exists() or quiet_log.read_text() == ""  # no fault, nothing logged
