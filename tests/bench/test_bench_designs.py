"""The course and wide benchmarks on every design, and the classic threads and wake floor.

Tiny sizes, real processes; no timing asserted: the JSON's structure, the
ratios to the classic of the same round, and that every design bought right.
"""

from __future__ import annotations

import json
import multiprocessing
import sys
import threading
import types
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from mpmarket.bench.classic import run_classic_threads
from mpmarket.bench.wake import wake_round
from mpmarket.bench.wide import wide_workload
from mpmarket.cli.bench import bench
from mpmarket.core.dump import dump_course_json
from mpmarket.core.generate import generate
from mpmarket.core.simulate import simulate
from mpmarket.core.workload import expected_purchases, purchase_line
from mpmarket.proc.context import process_context
from tests.bench.test_bench import check_case, check_schema, invoke, median

TINY_COURSE = {
    "products": {
        "id1": {"product_type": "Tea", "name": "Linden", "type": "Herbal", "price": 9},
        "id2": {
            "product_type": "Coffee",
            "name": "Arabica",
            "acidity": 5.02,
            "roast_level": "LIGHT",
            "price": 3,
        },
    },
    "producers": [
        {
            "name": "p1",
            "products": [["id1", 2, 0.001], ["id2", 1, 0.002]],
            "republish_wait_time": 0.01,
        }
    ],
    "consumers": [
        {
            "name": "c1",
            "retry_wait_time": 0.01,
            "carts": [
                [
                    {"type": "add", "product": "id1", "quantity": 2},
                    {"type": "add", "product": "id2", "quantity": 1},
                    {"type": "remove", "product": "id1", "quantity": 1},
                ],
                [{"type": "add", "product": "id2", "quantity": 2}],
            ],
        }
    ],
    "marketplace": {"queue_size_per_producer": 15},
}

COURSE_FIGURES = {
    "agents",
    "bought",
    "wall_s",
    "startup_s",
    "market_s",
    "ideal_s",
    "market_vs_ideal",
    "wall_vs_ideal",
}
COURSE_VERSUS = {
    "wall_minus_ideal_s",
    "wall_vs_classic_threads",
    "wall_minus_classic_threads_s",
    "wall_vs_classic_processes",
}
DESIGN_SUFFIXES = ("", " classic processes", " classic threads")


def course_figures(name: str) -> set[str]:
    return COURSE_FIGURES if "classic" in name else COURSE_FIGURES | COURSE_VERSUS


@pytest.fixture
def course_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "cases"
    folder.mkdir()
    (folder / "tiny.in").write_text(json.dumps(TINY_COURSE))
    (folder / "tiny.ref.out").write_text("not a case: only *.in files are run\n")
    return folder


def test_course_without_simulator(
    tmp_path: Path, course_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "mpmarket.core.simulate", None)  # import raises ImportError
    result, data = invoke(tmp_path, "course", str(course_dir), "--repeat", "1")
    cases = check_schema(data, "course", 1)
    assert list(cases) == [
        f"{stem}{suffix}" for stem in ("tiny", "total") for suffix in DESIGN_SUFFIXES
    ]
    assert data["params"]["ideal_available"] is False
    assert data["params"]["designs"] == ["mpmarket", "classic processes", "classic threads"]
    for name, case in cases.items():
        check_case(case, course_figures(name))
        assert set(case["checks"]) == {"ok", "correct", "deadlock_free"}
        assert median(case, "agents") == 2
        assert median(case, "bought") == 4  # 2 + 1 - 1, then 2
        assert 0 < median(case, "startup_s") < median(case, "wall_s")
        assert 0 < median(case, "market_s") < median(case, "wall_s")
        for figure in ("ideal_s", "market_vs_ideal", "wall_vs_ideal"):
            assert case["figures"][figure] is None
        if "classic" not in name:
            assert case["figures"]["wall_minus_ideal_s"] is None
            threads = cases[f"{name} classic threads"]
            assert median(case, "wall_vs_classic_threads") == pytest.approx(
                median(case, "wall_s") / median(threads, "wall_s")
            )
            assert median(case, "wall_minus_classic_threads_s") == pytest.approx(
                median(case, "wall_s") - median(threads, "wall_s")
            )
            processes = cases[f"{name} classic processes"]
            assert median(case, "wall_vs_classic_processes") == pytest.approx(
                median(case, "wall_s") / median(processes, "wall_s")
            )
    assert "n/a" in result.stderr


def test_course_with_simulator(
    tmp_path: Path, course_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = types.ModuleType("mpmarket.core.simulate")
    fake.simulate = lambda workload, *, poll=False: types.SimpleNamespace(makespan=0.25)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "mpmarket.core.simulate", fake)
    _, data = invoke(
        tmp_path,
        "course",
        str(course_dir),
        "--designs",
        "mpmarket,classic-threads",
        "--repeat",
        "1",
    )
    cases = check_schema(data, "course", 1)
    assert list(cases) == ["tiny", "tiny classic threads", "total", "total classic threads"]
    assert data["params"]["ideal_available"] is True
    for name, case in cases.items():
        check_case(case, course_figures(name))
        assert case["checks"] == {"ok": True, "correct": True, "deadlock_free": True}
        assert median(case, "ideal_s") == 0.25
        assert median(case, "market_vs_ideal") == pytest.approx(median(case, "market_s") / 0.25)
        assert median(case, "wall_vs_ideal") == pytest.approx(median(case, "wall_s") / 0.25)
        if "classic" not in name:
            assert median(case, "wall_minus_ideal_s") == pytest.approx(
                median(case, "wall_s") - 0.25
            )
            assert case["figures"]["wall_vs_classic_processes"] is None  # not measured


def test_course_skips_a_deadlocked_case(
    tmp_path: Path, course_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = types.ModuleType("mpmarket.core.simulate")
    fake.simulate = lambda workload, *, poll=False: types.SimpleNamespace(makespan=None)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "mpmarket.core.simulate", fake)
    path = tmp_path / "bench.json"
    result = CliRunner().invoke(
        bench, ["course", str(course_dir), "--repeat", "1", "--json", str(path)]
    )
    assert result.exit_code == 1
    assert "deadlock_free" in result.stderr
    cases = check_schema(json.loads(path.read_text()), "course", 1)
    for suffix in DESIGN_SUFFIXES:
        tiny = cases[f"tiny{suffix}"]
        assert tiny["checks"] == {"ok": False, "correct": False, "deadlock_free": False}
        assert median(tiny, "agents") == 2
        figures = course_figures(f"tiny{suffix}") - {"agents"}
        assert all(tiny["figures"][name] is None for name in figures)


def test_course_without_cases(tmp_path: Path) -> None:
    result = CliRunner().invoke(bench, ["course", str(tmp_path)])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert "course cases (*.in)" in result.stderr


WIDE_FIGURES = {
    "agents",
    "bought",
    "wall_s",
    "startup_s",
    "market_s",
    "shutdown_s",
    "ideal_s",
    "market_vs_ideal",
}
WIDE_VERSUS = {"wall_vs_classic_threads", "market_vs_classic_threads", "wall_vs_classic_processes"}
DESIGNS = ("mpmarket", "mpmarket packed", "classic processes", "classic threads")


def test_wide(tmp_path: Path) -> None:
    _, data = invoke(
        tmp_path, "wide", "--wide", "3x4", "--one-kind", "2x3", "--sessions", "1", "--repeat", "1"
    )
    cases = check_schema(data, "wide", 1)
    assert list(cases) == [f"{shape} {d}" for shape in ("3x4", "2x3 one kind") for d in DESIGNS]
    assert data["params"]["designs"] == list(DESIGNS)
    for name, case in cases.items():
        classic = "classic" in name
        check_case(case, WIDE_FIGURES if classic else WIDE_FIGURES | WIDE_VERSUS)
        assert case["checks"] == {"ok": True, "correct": True}
        assert 0 < median(case, "market_s") < median(case, "wall_s")
        assert median(case, "ideal_s") > 0
        assert median(case, "market_vs_ideal") == pytest.approx(
            median(case, "market_s") / median(case, "ideal_s")
        )
        if not classic:
            shape = name.rsplit(" mpmarket", 1)[0]
            threads = cases[f"{shape} classic threads"]
            processes = cases[f"{shape} classic processes"]
            assert median(case, "wall_vs_classic_threads") == pytest.approx(
                median(case, "wall_s") / median(threads, "wall_s")
            )
            assert median(case, "market_vs_classic_threads") == pytest.approx(
                median(case, "market_s") / median(threads, "market_s")
            )
            assert median(case, "wall_vs_classic_processes") == pytest.approx(
                median(case, "wall_s") / median(processes, "wall_s")
            )


def test_wide_on_some_designs(tmp_path: Path) -> None:
    _, data = invoke(
        tmp_path,
        "wide",
        "--wide",
        "2x2",
        "--one-kind",
        "1x2",
        "--sessions",
        "1",
        "--designs",
        "mpmarket-packed,classic-threads",
        "--repeat",
        "1",
    )
    cases = check_schema(data, "wide", 1)
    assert list(cases) == [
        "2x2 mpmarket packed",
        "2x2 classic threads",
        "1x2 one kind mpmarket packed",
        "1x2 one kind classic threads",
    ]
    assert cases["2x2 mpmarket packed"]["figures"]["wall_vs_classic_processes"] is None


def test_wide_workloads_are_course_cases_that_cannot_deadlock() -> None:
    wide = wide_workload(12, 20, sessions=3, seed=4)
    assert wide == wide_workload(12, 20, sessions=3, seed=4)
    assert len(wide.producers) == 12 and len(wide.consumers) == 20
    assert len({step.product for p in wide.producers for step in p.steps}) == 8
    one = wide_workload(4, 10, kinds=1, removes=0.5, sessions=3, seed=4)
    assert len({step.product for p in one.producers for step in p.steps}) == 1
    assert sum(op.action == "remove" for c in one.consumers for s in c.sessions for op in s) > 0
    for workload in (wide, one):
        times = [s.make_time for p in workload.producers for s in p.steps]
        times += [p.republish_wait_time for p in workload.producers]
        times += [c.retry_wait_time for c in workload.consumers]
        assert all(0.001 <= t <= 0.020 for t in times)
        assert json.loads(dump_course_json(workload))  # course JSON, read back as is
        assert simulate(workload).makespan is not None


def test_classic_threads_buy_what_the_workload_says() -> None:
    workload = generate(3, 5, sessions=2, seed=2, make_time=0.001, wait_time=0.002)
    run = run_classic_threads(workload)
    assert run.ok, run.errors
    bought = Counter(purchase_line(c, p) for c, products in run.orders for p in products)
    assert bought == expected_purchases(workload)
    assert 0 < run.market_s < run.wall_s
    assert run.startup_s >= 0 and run.shutdown_s >= 0
    assert not [t for t in threading.enumerate() if t.name.startswith("cons")]


@pytest.mark.parametrize("receivers", [1, 3])
def test_the_wake_floor_times_each_message_once(receivers: int) -> None:
    latencies = wake_round(receivers, 30, 5, 0.001, process_context(None))
    assert len(latencies) == 25
    assert all(latency > 0 for latency in latencies)
    assert multiprocessing.active_children() == []
