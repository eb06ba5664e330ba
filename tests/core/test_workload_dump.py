"""Workloads written as TOML or course JSON load back as the same workload."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpmarket.core.dump import dump_course_json, dump_toml
from mpmarket.core.generate import generate
from mpmarket.core.load import load_workload
from mpmarket.core.workload import ConsumerSpec, Op, ProducerSpec, ProductionStep, Workload
from mpmarket.products import Coffee, Product, Tea


def _same(a: Workload, b: Workload) -> bool:
    return dataclasses.replace(a, source="") == dataclasses.replace(b, source="")


def _round_trip(workload: Workload, tmp_path: Path) -> None:
    toml_file = tmp_path / "w.toml"
    json_file = tmp_path / "w.json"
    toml_file.write_text(dump_toml(workload))
    json_file.write_text(dump_course_json(workload))
    assert _same(load_workload(toml_file), workload)
    assert _same(load_workload(json_file), workload)


@settings(max_examples=60, deadline=None)
@given(
    producers=st.integers(1, 12),
    consumers=st.integers(0, 12),
    sessions=st.integers(0, 4),
    seed=st.integers(0, 2**32),
)
def test_generated_workloads_round_trip(tmp_path_factory, producers, consumers, sessions, seed):
    workload = generate(producers, consumers, sessions=sessions, seed=seed)
    _round_trip(workload, tmp_path_factory.mktemp("dump"))


def test_awkward_names_get_distinct_readable_ids(tmp_path):
    twins = [
        Tea("Earl Grey", 7, "Black"),
        Tea("Earl Grey", 8, "Black"),
        Coffee("Café #1", 2, 5.5, "DARK"),
    ]
    others = [Product("!!!", 1)]
    workload = Workload(
        producers=(
            ProducerSpec("maker", tuple(ProductionStep(p, 1, 0.5) for p in twins + others), 0.25),
        ),
        consumers=(
            ConsumerSpec("buyer", 1.0, ((Op("add", twins[1], 2), Op("remove", twins[1], 1)),)),
        ),
        queue_size_per_producer=3,
    )
    text = dump_toml(workload)
    assert "earl-grey = " in text and "earl-grey-2 = " in text and "caf-1 = " in text
    _round_trip(workload, tmp_path)


def test_course_cases_round_trip(conformance_dir, tmp_path):
    for case in sorted(conformance_dir.glob("*.in")):
        _round_trip(load_workload(case), tmp_path)


@pytest.mark.parametrize(
    "config", sorted(Path(__file__).resolve().parents[2].glob("configs/*.toml"))
)
def test_configs_round_trip(config, tmp_path):
    _round_trip(load_workload(config), tmp_path)
