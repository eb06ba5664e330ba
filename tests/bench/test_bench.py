"""The bench commands, end to end with tiny sizes: real processes, real servers.

Machines are shared and noisy, so no timing is asserted beyond "positive";
what is asserted is the JSON schema and that the counts agree with each other.
"""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from click.testing import CliRunner, Result

from mpmarket.bench import results, workers
from mpmarket.cli.bench import bench

TOP_KEYS = {"benchmark", "version", "machine", "repeat", "params", "floor", "cases"}


# tests/conftest.py fails (and reaps) any test that leaves a process behind.


def invoke(tmp_path: Path, *args: str) -> tuple[Result, dict[str, Any]]:
    path = tmp_path / "bench.json"
    result = CliRunner().invoke(bench, [*args, "--json", str(path)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.stdout == ""  # tables and progress go to stderr
    return result, json.loads(path.read_text())


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_case(case: dict[str, Any], figures: set[str]) -> None:
    assert set(case) == {"case", "figures", "checks"}
    assert isinstance(case["case"], str)
    assert set(case["figures"]) == figures
    for name, stat in case["figures"].items():
        if stat is None:
            continue
        assert set(stat) == {"median", "min", "max"}, name
        assert all(is_number(v) for v in stat.values()), name
        assert stat["min"] <= stat["median"] <= stat["max"], name
    assert all(isinstance(ok, bool) for ok in case["checks"].values())
    assert all(case["checks"].values()), case["checks"]


def check_schema(data: dict[str, Any], benchmark: str, repeat: int) -> dict[str, dict]:
    """Check the common keys; return the cases by name."""
    assert set(data) == TOP_KEYS
    assert data["benchmark"] == benchmark
    assert data["version"] == 1
    assert data["repeat"] == repeat
    machine = data["machine"]
    assert set(machine) == {"cpu_count", "python", "platform"}
    assert isinstance(machine["cpu_count"], int) and machine["cpu_count"] >= 1
    assert isinstance(machine["python"], str) and isinstance(machine["platform"], str)
    assert isinstance(data["params"], dict)
    assert isinstance(data["cases"], list) and data["cases"]
    return {case["case"]: case for case in data["cases"]}


def median(case: dict[str, Any], figure: str) -> float:
    return case["figures"][figure]["median"]


FLOOR_FIGURES = {"calls_per_s", "rt_us"}


def test_floor(tmp_path: Path) -> None:
    result, data = invoke(tmp_path, "floor", "--clients", "1,2", "--calls", "300", "--repeat", "2")
    cases = check_schema(data, "floor", 2)
    assert list(cases) == ["1 client", "2 clients"]
    assert data["floor"] is None
    assert data["params"] == {"clients": [1, 2], "calls": 300}
    for case in cases.values():
        check_case(case, FLOOR_FIGURES)
        assert median(case, "calls_per_s") > 0
        assert median(case, "rt_us") > 0
    assert "mpmarket bench floor" in result.stderr


CHURN_FIGURES = {
    "bought",
    "calls",
    "published",
    "bought_per_s",
    "calls_per_s",
    "rt_per_product",
    "bought_vs_floor",
}


CLASSIC_CHURN = "course-api classic"


def test_churn(tmp_path: Path) -> None:
    _, data = invoke(
        tmp_path,
        "churn",
        "--sizes",
        "1x1,2x2",
        "--duration",
        "0.5",
        "--floor-calls",
        "200",
        "--repeat",
        "1",
    )
    cases = check_schema(data, "churn", 1)
    assert list(cases) == [
        f"{size}{mode}"
        for size in ("1x1", "2x2")
        for mode in ("", " course-api", f" {CLASSIC_CHURN}")
    ]
    assert data["params"]["modes"] == ["own", "course-api"]
    assert data["params"]["api_wait_s"] == pytest.approx(0.001)
    check_case(data["floor"], FLOOR_FIGURES)
    assert data["floor"]["case"] == "8 clients"
    floor_calls_per_s = median(data["floor"], "calls_per_s")
    for name, case in cases.items():
        classic = name.endswith(CLASSIC_CHURN)
        check_case(case, CHURN_FIGURES if classic else CHURN_FIGURES | {"bought_vs_classic"})
        assert set(case["checks"]) == {
            "bought_matches_books",
            "published_matches_books",
            "balanced",
        }
        bought, calls = median(case, "bought"), median(case, "calls")
        assert bought > 0
        # At least a publish per product bought, and the adds and orders on top.
        assert calls > bought
        assert median(case, "published") >= bought
        assert median(case, "rt_per_product") == pytest.approx(calls / bought)
        # The window is at least --duration long.
        assert 0 < median(case, "bought_per_s") <= bought / 0.5
        assert median(case, "bought_vs_floor") == pytest.approx(
            median(case, "bought_per_s") / floor_calls_per_s
        )
        if not classic:  # against the classic of the same size and round
            reference = cases[f"{name.split()[0]} {CLASSIC_CHURN}"]
            assert median(case, "bought_vs_classic") == pytest.approx(
                median(case, "bought_per_s") / median(reference, "bought_per_s")
            )


def test_churn_with_one_size(tmp_path: Path) -> None:
    _, data = invoke(
        tmp_path,
        "churn",
        "-P",
        "2",
        "-C",
        "3",
        "--duration",
        "0.3",
        "--add-wait-ms",
        "2",
        "--modes",
        "own",
        "--floor-calls",
        "100",
        "--repeat",
        "1",
    )
    assert [case["case"] for case in data["cases"]] == ["2x3", f"2x3 {CLASSIC_CHURN}"]
    assert data["params"]["modes"] == ["own"]
    assert data["params"]["sizes"] == ["2x3"]
    assert data["params"]["add_wait_s"] == pytest.approx(0.002)


LATENCY_FIGURES = {
    "samples",
    "late",
    "p50_us",
    "p90_us",
    "p99_us",
    "rt_us",
    "p50_vs_rt",
    "p99_vs_rt",
}


LATENCY_VERSUS = {
    "wake_p50_us",
    "wake_p99_us",
    "p50_vs_wake_rt",
    "p99_vs_wake_rt",
    "p50_vs_classic",
    "p99_vs_classic",
}
WAITS_FIGURES = {
    "samples",
    "timed_out",
    "p50_us",
    "p90_us",
    "p99_us",
    "sleep_p50_us",
    "sleep_p90_us",
    "p90_minus_sleep_us",
}


def test_latency(tmp_path: Path) -> None:
    _, data = invoke(
        tmp_path,
        "latency",
        "--consumers",
        "1,3",
        "--samples",
        "50",
        "--classic-retry-ms",
        "0.5",
        "--floor-calls",
        "200",
        "--repeat",
        "1",
    )
    cases = check_schema(data, "latency", 1)
    assert list(cases) == [
        "1 consumer",
        "1 consumer, classic",
        "3 consumers",
        "3 consumers, classic",
        "timed-out wait, 1 ms",
        "timed-out wait, 5 ms",
    ]
    assert data["params"]["classic_retry_wait_ms"] == pytest.approx(0.5)
    assert data["params"]["wait_timeouts_ms"] == [1, 5]
    assert data["params"]["wait_samples"] == 50
    check_case(data["floor"], FLOOR_FIGURES)
    rt = median(data["floor"], "rt_us")
    for name in ("timed-out wait, 1 ms", "timed-out wait, 5 ms"):
        waits = cases.pop(name)
        check_case(waits, WAITS_FIGURES)
        assert waits["checks"] == {"timed out": True}  # every call returned False
        assert median(waits, "samples") == median(waits, "timed_out") == 50
        assert median(waits, "p50_us") <= median(waits, "p90_us")
        assert median(waits, "p90_us") <= median(waits, "p99_us")
        assert median(waits, "sleep_p50_us") <= median(waits, "sleep_p90_us")
        assert median(waits, "p90_minus_sleep_us") == pytest.approx(
            median(waits, "p90_us") - median(waits, "sleep_p90_us")
        )
    for name, case in cases.items():
        classic = name.endswith("classic")
        check_case(case, LATENCY_FIGURES if classic else LATENCY_FIGURES | LATENCY_VERSUS)
        assert median(case, "samples") == 50
        assert 0 <= median(case, "late") <= 50
        assert 0 < median(case, "p50_us") <= median(case, "p90_us") <= median(case, "p99_us")
        assert median(case, "rt_us") == rt
        assert median(case, "p50_vs_rt") == pytest.approx(median(case, "p50_us") / rt)
        assert median(case, "p99_vs_rt") == pytest.approx(median(case, "p99_us") / rt)
        if classic:
            continue
        reference = cases[f"{name}, classic"]
        assert 0 < median(case, "wake_p50_us") <= median(case, "wake_p99_us")
        for p in ("p50", "p99"):
            assert median(case, f"{p}_vs_wake_rt") == pytest.approx(
                median(case, f"{p}_us") / (median(case, f"wake_{p}_us") + rt)
            )
            assert median(case, f"{p}_vs_classic") == pytest.approx(
                median(case, f"{p}_us") / median(reference, f"{p}_us")
            )


def test_scale(tmp_path: Path) -> None:
    _, data = invoke(
        tmp_path,
        "scale",
        "--agents",
        "8",
        "--churn-seconds",
        "0.5",
        "--churn-size",
        "1x2",
        "--repeat",
        "2",
    )
    cases = check_schema(data, "scale", 2)
    assert list(cases) == ["8 agents", "churn 1x2"]
    run = cases["8 agents"]
    check_case(
        run,
        {
            "agents",
            "startup_s",
            "wall_s",
            "server_rss_mb",
            "agent_rss_mb",
            "agent_pss_mb",
            "process_pss_max_mb",
            "processes",
            "processes_sampled",
        },
    )
    assert set(run["checks"]) == {"ok", "bought_all"}
    assert median(run, "agents") == 8
    assert median(run, "processes") == 8
    assert 1 <= median(run, "processes_sampled") <= 8
    assert 0 < median(run, "startup_s") < median(run, "wall_s")
    assert median(run, "server_rss_mb") > 0
    assert median(run, "agent_rss_mb") > 0
    if data["params"]["pss_available"]:
        assert 0 < median(run, "agent_pss_mb") <= median(run, "process_pss_max_mb")
    else:
        assert run["figures"]["agent_pss_mb"] is None
    leak = cases["churn 1x2"]
    check_case(
        leak,
        {
            "seconds",
            "bought_per_s",
            "server_rss_start_mb",
            "server_rss_end_mb",
            "server_rss_growth_mb",
        },
    )
    assert median(leak, "seconds") >= 0.5
    assert median(leak, "server_rss_start_mb") > 0
    stats = leak["figures"]
    growth = [
        stats["server_rss_end_mb"][k] - stats["server_rss_start_mb"][k] for k in ("min", "max")
    ]
    assert min(growth) - 1e-9 <= stats["server_rss_growth_mb"]["median"] <= max(growth) + 1e-9


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["churn", "--sizes", "4"], "PRODUCERSxCONSUMERS"),
        (["churn", "--sizes", "0x2"], "at least one producer"),
        (["churn", "-P", "2"], "both -P and -C"),
        (["floor", "--clients", "1,x"], "comma-separated"),
        (["latency", "--consumers", "0"], "at least 1"),
        (["scale", "--churn-size", "1x1,2x2"], "one size"),
        (["floor", "--repeat", "0"], "--repeat"),
        (["churn", "--modes", "own,fast"], "'fast' is not one of own, course-api"),
        (["course", ".", "--designs", "classic"], "is not one of"),
        (["wide", "--designs", "mpmarket,threads"], "is not one of"),
        (["wide", "--one-kind", "1x1,2x2"], "one size"),
    ],
)
def test_bad_usage(args: list[str], message: str) -> None:
    result = CliRunner().invoke(bench, args)
    assert result.exit_code == 2
    assert message in result.stderr


def test_an_exited_process_has_no_memory_figure() -> None:
    """A finished consumer is a zombie until reaped: it reads 0, which is no figure."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        process = psutil.Process(child.pid)
        deadline = time.monotonic() + 10
        while process.status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
            time.sleep(0.05)  # not reaped: child.wait() comes last
        assert process.status() == psutil.STATUS_ZOMBIE
        assert workers._rss(process) is None
        assert workers._pss(process) is None
        assert workers._rss(psutil.Process()) > 0  # this one is alive
    finally:
        child.wait(timeout=10)


def test_percentile() -> None:
    assert results.percentile([3, 1, 2], 50) == 2
    assert results.percentile([1, 2, 3, 4], 50) == 2.5
    assert results.percentile([5], 99) == 5
    assert results.percentile(list(range(101)), 90) == 90
    with pytest.raises(ValueError):
        results.percentile([], 50)


def test_parse_sizes() -> None:
    assert results.parse_sizes("1x1, 4X8,16x32") == [(1, 1), (4, 8), (16, 32)]
    for bad in ("", "4", "4x", "ax2", "1x0", "-1x2"):
        with pytest.raises(ValueError):
            results.parse_sizes(bad)


def test_stat_of() -> None:
    assert results.Stat.of([3.0, None, 1.0, 2.0]) == results.Stat(2.0, 1.0, 3.0)
    assert results.Stat.of([None, None]) is None


def _churn_model():
    """docs/churn_model.py, the model docs/performance.md reads the churn figures against."""
    path = Path(__file__).resolve().parents[2] / "docs" / "churn_model.py"
    return runpy.run_path(str(path))["ChurnModel"]


def test_the_churn_model_is_bound_by_patience_at_4x8():
    """docs/performance.md's claim: at 4x8 a longer patience means fewer products a second."""
    model = _churn_model()
    rates = [model(4, 8, patience, 50e-6).run(1.0)[0] for patience in (0.002, 0.005, 0.010)]
    assert rates[0] > rates[1] > rates[2] > 0
    fast = model(4, 8, 0.005, 10e-6).run(1.0)[0]
    assert fast < 2 * rates[1]  # a 5x faster round trip does not even double it
