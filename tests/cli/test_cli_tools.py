"""stress, gen and validate end to end: the CLI as a subprocess, real processes."""

from __future__ import annotations

import json
import os

import pytest

from mpmarket.core.load import load_workload
from mpmarket.core.workload import expected_purchases
from tests.helpers import bought_lines, run_cli

STRESS_SECONDS = float(os.environ.get("MPMARKET_TEST_STRESS_SECONDS", "2"))


def test_stress_with_kills_keeps_every_invariant(tmp_path):
    report_path = tmp_path / "stress.json"
    result = run_cli(
        "stress",
        "--producers", "5",
        "--consumers", "6",
        "--duration", str(STRESS_SECONDS),
        "--kill-consumers", "2",
        "--kill-producers", "1",
        "--seed", "4",
        "--quiet",
        "--json", report_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("stress OK: ")
    report = json.loads(report_path.read_text())
    assert report["stress"]["ok"] and report["stress"]["problems"] == []
    assert len(report["stress"]["kills"]) == 3
    killed = {kill["agent"] for kill in report["stress"]["kills"]}
    assert {death["name"] for death in report["deaths"]} == killed
    assert report["violations"] == [] and report["products_bought"] > 0
    books = report["books"]
    assert books["published"] == books["on_sale"] + books["in_carts"] + books["ordered"]


def test_stress_kills_whole_processes_of_packed_agents(tmp_path):
    report_path = tmp_path / "stress.json"
    result = run_cli(
        "stress",
        "--producers", "12",
        "--consumers", "8",
        "--agents-per-process", "3",
        "--duration", str(STRESS_SECONDS),
        "--kill-consumers", "1",
        "--kill-producers", "1",
        "--seed", "2",
        "--quiet",
        "--json", report_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + result.stdout
    report = json.loads(report_path.read_text())
    stress = report["stress"]
    assert stress["ok"] and stress["agents_per_process"] == 3
    processes = [kill["process"] for kill in stress["kills"]]
    # Consumers cons1-3, cons4-6, cons7-8; the eight first producers each make
    # one kind, so only prod10-12 is a process of mixers alone.
    assert ["prod10", "prod11", "prod12"] in processes
    assert [kill["agent"] for kill in stress["kills"]] == [names[0] for names in processes]
    casualties = {name for names in processes for name in names}
    assert len(casualties) >= 3 + 2
    assert {death["name"] for death in report["deaths"]} == casualties
    assert report["violations"] == [] and report["products_bought"] > 0


def test_stress_refuses_kills_of_processes_that_are_not_there():
    result = run_cli(
        "stress", "--producers", "10", "--consumers", "2", "--agents-per-process", "2",
        "--kill-producers", "2",
    )  # fmt: skip
    # prod1-8 make one kind each: prod9-10 is the only process of mixers alone.
    assert result.returncode == 2
    assert "--kill-producers" in result.stderr and "at most 1, the processes" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_long_stress_run():
    """MPMARKET_SLOW=1 runs it; MPMARKET_STRESS_SECONDS sets its length."""
    seconds = os.environ.get("MPMARKET_STRESS_SECONDS", "60")
    result = run_cli(
        "stress", "--producers", "16", "--consumers", "32", "--duration", seconds,
        "--kill-consumers", "4", "--kill-producers", "4", "--quiet",
        timeout=float(seconds) + 120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + result.stdout


def test_stress_refuses_impossible_kills():
    result = run_cli("stress", "--producers", "2", "--kill-producers", "2")
    assert result.returncode == 2
    assert "--kill-producers" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("file_format", ["toml", "course"])
def test_gen_output_validates_and_runs(tmp_path, file_format):
    path = tmp_path / ("market.toml" if file_format == "toml" else "market.json")
    made = run_cli(
        "gen", path, "--producers", "3", "--consumers", "4", "--seed", "9", "--format", file_format
    )
    assert made.returncode == 0, made.stderr
    checked = run_cli("validate", path)
    assert checked.returncode == 0, checked.stderr
    assert "3 producers, 4 consumers" in checked.stdout and "ideal makespan" in checked.stdout
    ran = run_cli("run", path, "--quiet")
    assert ran.returncode == 0, ran.stderr
    assert bought_lines(ran.stdout) == expected_purchases(load_workload(path))


def test_gen_to_stdout_is_the_same_workload_as_run_generates(tmp_path):
    result = run_cli("gen", "-", "--producers", "2", "--consumers", "3")
    assert result.returncode == 0
    path = tmp_path / "same.toml"
    path.write_text(result.stdout)
    from mpmarket.core.generate import generate

    assert expected_purchases(load_workload(path)) == expected_purchases(generate(2, 3))


BROKEN = {
    "not-json.json": ("{", "expected valid JSON"),
    "not-toml.toml": ("[market", "expected valid TOML"),
    "unknown-product.toml": (
        '[products]\n[[consumers]]\nname = "c"\nretry_wait_time = 0.1\nsessions = [[{ add = "x" }]]\n',
        "consumers[0].sessions[0][0].add: expected a product id",
    ),
    "negative.toml": (
        '[products]\nt = { kind = "Tea", name = "T", price = 1, type = "H" }\n'
        '[[producers]]\nname = "p"\nrepublish_wait_time = 0.1\nmake = [{ product = "t", quantity = -2, time = 0.1 }]\n',
        "producers[0].make[0].quantity: expected a non-negative integer, got -2",
    ),
    "kind.toml": ('[products]\nt = { kind = "Mate", name = "T", price = 1 }\n', "products.t.kind"),
}


def test_validate_reports_each_broken_file_in_one_line(tmp_path):
    paths = []
    for name, (content, _) in BROKEN.items():
        (tmp_path / name).write_text(content)
        paths.append(tmp_path / name)
    good = tmp_path / "good.toml"
    assert run_cli("gen", good).returncode == 0
    result = run_cli("validate", *paths, good)
    assert result.returncode == 2
    errors = result.stderr.strip().splitlines()
    assert len(errors) == len(BROKEN)
    for line, (name, (_, field)) in zip(errors, BROKEN.items(), strict=True):
        assert line.startswith(f"mpmarket: error: {tmp_path / name}: ")
        assert field in line
    assert f"{good}: 4 producers, 8 consumers" in result.stdout


def test_validate_predicts_a_deadlock(tmp_path):
    from tests.run.test_faults import DEADLOCK_WORKLOAD

    path = tmp_path / "stuck.toml"
    path.write_text(DEADLOCK_WORKLOAD)
    result = run_cli("validate", path)
    assert result.returncode == 3
    assert (
        "cons1 waits for Tea(name='Linden', price=9, type='Herbal') made by prod1" in result.stdout
    )
