"""Workloads: the course's JSON, mpmarket's TOML, the generator, and the errors.

The course's cases are read from ``../shared/conformance`` when that folder
exists (they are reference data, never copied here); those tests skip otherwise.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpmarket.core.generate import generate
from mpmarket.core.load import load_course_json, load_toml, load_workload, parse_course, parse_toml
from mpmarket.core.simulate import simulate
from mpmarket.core.workload import (
    DEFAULT_QUEUE_SIZE,
    ConsumerSpec,
    Op,
    ProducerSpec,
    ProductionStep,
    Workload,
    expected_purchases,
    purchase_line,
)
from mpmarket.errors import WorkloadError
from mpmarket.products import Coffee, Product, Tea

CONFORMANCE = Path(__file__).resolve().parents[3] / "shared" / "conformance"
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def course_cases() -> list[Any]:
    if not CONFORMANCE.is_dir():
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"no {CONFORMANCE}"))]
    return [pytest.param(path, id=path.stem) for path in sorted(CONFORMANCE.glob("*.in"))]


def config_files() -> list[Any]:
    return [pytest.param(path, id=path.name) for path in sorted(CONFIGS.glob("*.toml"))]


def unsourced(workload: Workload) -> Workload:
    return dataclasses.replace(workload, source="")


# -- writing workloads in both formats ----------------------------------------


def toml_value(value: Any) -> str:
    """One TOML value on one line: inline tables and arrays all the way down."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        items = ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items())
        return "{ " + items + " }" if items else "{}"
    raise TypeError(f"no TOML for {value!r}")


def to_toml(data: dict[str, Any]) -> str:
    return "".join(f"{key} = {toml_value(value)}\n" for key, value in data.items())


def course_to_toml_data(course: dict[str, Any]) -> dict[str, Any]:
    """The same workload as a course JSON dict, in mpmarket's TOML layout."""
    data: dict[str, Any] = {
        "products": {
            key: {"kind": spec["product_type"]}
            | {k: v for k, v in spec.items() if k != "product_type"}
            for key, spec in course["products"].items()
        },
        "producers": [
            {
                "name": producer["name"],
                "republish_wait_time": producer["republish_wait_time"],
                "make": [
                    {"product": product, "quantity": quantity, "time": time}
                    for product, quantity, time in producer["products"]
                ],
            }
            for producer in course["producers"]
        ],
        "consumers": [
            {
                "name": consumer["name"],
                "retry_wait_time": consumer["retry_wait_time"],
                "sessions": [
                    [{op["type"]: op["product"], "quantity": op["quantity"]} for op in cart]
                    for cart in consumer["carts"]
                ],
            }
            for consumer in course["consumers"]
        ],
    }
    if "marketplace" in course:
        data["market"] = course["marketplace"]
    return data


def workload_to_course(workload: Workload) -> dict[str, Any]:
    """A Workload as course JSON data (product ids p0, p1, ... in order of use)."""
    ids: dict[Product, str] = {}

    def product_id(product: Product) -> str:
        return ids.setdefault(product, f"p{len(ids)}")

    producers = [
        {
            "name": spec.name,
            "products": [
                [product_id(step.product), step.quantity, step.make_time] for step in spec.steps
            ],
            "republish_wait_time": spec.republish_wait_time,
        }
        for spec in workload.producers
    ]
    consumers = [
        {
            "name": spec.name,
            "retry_wait_time": spec.retry_wait_time,
            "carts": [
                [
                    {"type": op.action, "product": product_id(op.product), "quantity": op.quantity}
                    for op in session
                ]
                for session in spec.sessions
            ],
        }
        for spec in workload.consumers
    ]
    products = {
        key: {"product_type": type(product).__name__} | dataclasses.asdict(product)
        for product, key in ids.items()
    }
    return {
        "products": products,
        "producers": producers,
        "consumers": consumers,
        "marketplace": {"queue_size_per_producer": workload.queue_size_per_producer},
    }


# -- the course's cases ----------------------------------------------------------


@pytest.mark.parametrize("case", course_cases())
def test_course_case_loads_and_expected_purchases_match_the_reference(case: Path) -> None:
    workload = load_workload(case)
    assert workload.source == str(case)
    assert workload.producers and workload.consumers
    lines = sorted(expected_purchases(workload).elements())
    reference = case.with_suffix(".ref.out").read_text(encoding="utf-8").splitlines()
    assert lines == reference
    assert workload.products_to_buy == len(reference)


@pytest.mark.parametrize("case", course_cases())
def test_course_case_written_as_toml_is_the_same_workload(case: Path, tmp_path: Path) -> None:
    course = json.loads(case.read_text(encoding="utf-8"))
    toml_path = tmp_path / f"{case.stem}.toml"
    toml_path.write_text(to_toml(course_to_toml_data(course)), encoding="utf-8")
    from_toml = load_workload(toml_path)
    assert from_toml.source == str(toml_path)
    assert unsourced(from_toml) == unsourced(load_workload(case))


def test_expected_purchases_removes_only_what_the_session_holds() -> None:
    tea, coffee = Tea("Linden", 9, "Herbal"), Coffee("Arabica", 3, 5.02, "LIGHT")
    workload = Workload(
        producers=(),
        consumers=(
            ConsumerSpec(
                "ann",
                0.0,
                (
                    (Op("add", tea, 1), Op("remove", tea, 3), Op("add", tea, 2)),
                    (Op("remove", coffee, 1), Op("add", coffee, 2), Op("remove", coffee, 1)),
                    (Op("add", tea, 0), Op("add", coffee, 1), Op("remove", coffee, 1)),
                ),
            ),
            ConsumerSpec("ben", 0.0, ((Op("add", tea, 2),), (Op("add", tea, 1),))),
        ),
        queue_size_per_producer=1,
    )
    assert expected_purchases(workload) == Counter(
        {
            purchase_line("ann", tea): 2,
            purchase_line("ann", coffee): 1,
            purchase_line("ben", tea): 3,
        }
    )
    assert workload.products_to_buy == 6
    assert workload.sessions == 5
    assert purchase_line("ann", tea) == "ann bought Tea(name='Linden', price=9, type='Herbal')"


# -- the example configs ---------------------------------------------------------


def test_the_documented_configs_exist() -> None:
    names = {path.name for path in CONFIGS.glob("*.toml")}
    assert {"tea-and-coffee.toml", "busy-market.toml", "slow-producer.toml"} <= names


@pytest.mark.parametrize("config", config_files())
def test_config_loads(config: Path) -> None:
    workload = load_workload(config)
    assert workload == load_toml(config)
    assert workload.source == str(config)
    assert workload.producers and workload.consumers
    assert workload.products_to_buy > 0
    made = {step.product for producer in workload.producers for step in producer.steps}
    wanted = {op.product for c in workload.consumers for s in c.sessions for op in s}
    assert wanted <= made, "a consumer wants a product that nobody makes"
    # The simulator (instant hand-off, and the classic polling) finishes every one of them.
    for poll in (False, True):
        simulation = simulate(workload, poll=poll)
        assert simulation.deadlock is None
        assert simulation.purchases == expected_purchases(workload)


def test_the_documented_toml_example_loads(tmp_path: Path) -> None:
    page = CONFIGS.parent / "docs" / "workloads.md"
    if not page.is_file():
        pytest.skip("no docs/workloads.md")
    text = page.read_text(encoding="utf-8")
    start = text.find("```toml\n")
    if start < 0:
        pytest.skip("no TOML example in docs/workloads.md")
    example = text[start + len("```toml\n") : text.index("```", start + 7)]
    path = tmp_path / "workloads.toml"
    path.write_text(example, encoding="utf-8")
    workload = load_workload(path)
    assert workload.producers and workload.consumers and workload.products_to_buy > 0


@pytest.mark.parametrize(
    ("name", "low", "high"),
    [
        ("tea-and-coffee.toml", 0.1, 1.0),
        ("busy-market.toml", 1.0, 3.0),
        ("slow-producer.toml", 0.5, 3.0),
    ],
)
def test_config_takes_about_as_long_as_its_comments_say(name: str, low: float, high: float) -> None:
    makespan = simulate(load_workload(CONFIGS / name)).makespan
    assert makespan is not None
    assert low <= makespan <= high


@pytest.mark.parametrize("name", ["busy-market.toml", "slow-producer.toml"])
def test_config_has_a_single_product_producer_for_every_wanted_product(name: str) -> None:
    # tea-and-coffee.toml bends this rule on purpose and argues why in its comments.
    workload = load_workload(CONFIGS / name)
    single = {
        producer.steps[0].product
        for producer in workload.producers
        if len({step.product for step in producer.steps}) == 1
        and any(step.quantity for step in producer.steps)
    }
    wanted = {op.product for c in workload.consumers for s in c.sessions for op in s}
    assert wanted <= single


def test_tea_and_coffee_buys_what_its_comments_say() -> None:
    workload = load_workload(CONFIGS / "tea-and-coffee.toml")
    linden = Tea("Linden", 9, "Herbal")
    indonezia = Coffee("Indonezia", 1, 5.05, "MEDIUM")
    assert expected_purchases(workload) == Counter(
        {
            purchase_line("alice", linden): 2,
            purchase_line("alice", indonezia): 1,
            purchase_line("alice", Tea("Earl Grey", 7, "Black")): 1,
            purchase_line("bob", indonezia): 3,
            purchase_line("bob", Product("Mug", 12)): 1,
            purchase_line("bob", linden): 1,
        }
    )
    assert workload.queue_size_per_producer == 3
    assert workload.sessions == 4


# -- one workload, two formats --------------------------------------------------

BOTH_JSON = """\
{
  "products": {
    "green": {"product_type": "Tea", "name": "Sencha", "price": 11, "type": "Green"},
    "dark": {"product_type": "Coffee", "name": "Robusta", "price": 2.5,
             "acidity": 4.8, "roast_level": "DARK"},
    "cup": {"product_type": "Product", "name": "Cup", "price": 1}
  },
  "producers": [
    {"name": "farm", "products": [["green", 2, 0.01], ["cup", 1, 0]],
     "republish_wait_time": 0.2},
    {"name": "roaster", "products": [["dark", 3, 0.25]], "republish_wait_time": 1}
  ],
  "consumers": [
    {"name": "ann", "retry_wait_time": 0.5,
     "carts": [[{"type": "add", "product": "green", "quantity": 2},
                {"type": "remove", "product": "green", "quantity": 1}],
               [],
               [{"type": "add", "product": "dark", "quantity": 1},
                {"type": "add", "product": "cup", "quantity": 1}]]},
    {"name": "ben", "retry_wait_time": 0, "carts": []}
  ]
}
"""

# The same workload, leaning on the TOML format's defaults (quantity 1).
BOTH_TOML = """\
[products]
green = { kind = "Tea", name = "Sencha", price = 11, type = "Green" }
dark = { kind = "Coffee", name = "Robusta", price = 2.5, acidity = 4.8, roast_level = "DARK" }
cup = { kind = "Product", name = "Cup", price = 1 }

[[producers]]
name = "farm"
republish_wait_time = 0.2
make = [ { product = "green", quantity = 2, time = 0.01 }, { product = "cup", time = 0 } ]

[[producers]]
name = "roaster"
republish_wait_time = 1
make = [ { product = "dark", quantity = 3, time = 0.25 } ]

[[consumers]]
name = "ann"
retry_wait_time = 0.5
sessions = [
    [ { add = "green", quantity = 2 }, { remove = "green" } ],
    [],
    [ { add = "dark" }, { add = "cup", quantity = 1 } ],
]

[[consumers]]
name = "ben"
retry_wait_time = 0
sessions = []
"""


def test_the_same_workload_in_both_formats_is_equal(tmp_path: Path) -> None:
    json_path = tmp_path / "both.json"
    toml_path = tmp_path / "both.toml"
    json_path.write_text(BOTH_JSON, encoding="utf-8")
    toml_path.write_text(BOTH_TOML, encoding="utf-8")
    from_json = load_course_json(json_path)
    from_toml = load_toml(toml_path)
    assert from_json.source == str(json_path)
    assert from_toml.source == str(toml_path)
    assert unsourced(from_json) == unsourced(from_toml)

    green = Tea("Sencha", 11, "Green")
    dark = Coffee("Robusta", 2.5, 4.8, "DARK")
    cup = Product("Cup", 1)
    assert unsourced(from_toml) == Workload(
        producers=(
            ProducerSpec(
                "farm", (ProductionStep(green, 2, 0.01), ProductionStep(cup, 1, 0.0)), 0.2
            ),
            ProducerSpec("roaster", (ProductionStep(dark, 3, 0.25),), 1.0),
        ),
        consumers=(
            ConsumerSpec(
                "ann",
                0.5,
                (
                    (Op("add", green, 2), Op("remove", green, 1)),
                    (),
                    (Op("add", dark, 1), Op("add", cup, 1)),
                ),
            ),
            ConsumerSpec("ben", 0.0, ()),
        ),
        queue_size_per_producer=DEFAULT_QUEUE_SIZE,
        source="",
    )
    # Times are floats whatever the file wrote; product fields keep their type.
    assert isinstance(from_toml.producers[1].republish_wait_time, float)
    assert type(from_toml.producers[0].steps[0].product.price) is int
    assert expected_purchases(from_json) == Counter(
        {
            purchase_line("ann", green): 1,
            purchase_line("ann", dark): 1,
            purchase_line("ann", cup): 1,
        }
    )


@pytest.mark.parametrize("seed", [0, 1, 2, 7, 42])
def test_a_generated_workload_survives_both_formats(seed: int, tmp_path: Path) -> None:
    workload = generate(5, 6, sessions=3, seed=seed, queue_size=4)
    course = workload_to_course(workload)
    json_path = tmp_path / "generated.json"
    toml_path = tmp_path / "generated.toml"
    json_path.write_text(json.dumps(course, indent=1), encoding="utf-8")
    toml_path.write_text(to_toml(course_to_toml_data(course)), encoding="utf-8")
    assert unsourced(load_workload(json_path)) == unsourced(workload)
    assert unsourced(load_workload(toml_path)) == unsourced(workload)


# -- the generator ---------------------------------------------------------------


def all_ops(workload: Workload) -> list[Op]:
    return [op for c in workload.consumers for session in c.sessions for op in session]


@pytest.mark.parametrize("seed", [0, 1, 123])
def test_generate_is_deterministic_per_seed(seed: int) -> None:
    assert generate(6, 10, sessions=4, seed=seed) == generate(6, 10, sessions=4, seed=seed)


def test_generate_depends_on_the_seed() -> None:
    workloads = {generate(4, 8, seed=seed) for seed in range(10)}
    assert len(workloads) == 10


def test_generate_defaults() -> None:
    workload = generate()
    assert len(workload.producers) == 4
    assert len(workload.consumers) == 8
    assert workload.sessions == 8 * 3
    assert workload.queue_size_per_producer == DEFAULT_QUEUE_SIZE
    assert workload.source == "<generated>"


@settings(max_examples=60, deadline=None)
@given(
    producers=st.integers(1, 14),
    consumers=st.integers(0, 12),
    sessions=st.integers(0, 5),
    seed=st.integers(-(2**40), 2**40),
    queue_size=st.integers(1, 40),
    make_time=st.sampled_from([0.0, 0.001, 0.004, 0.25]),
    wait_time=st.sampled_from([0.0, 0.01, 0.3]),
)
def test_generate_respects_its_arguments(
    producers: int,
    consumers: int,
    sessions: int,
    seed: int,
    queue_size: int,
    make_time: float,
    wait_time: float,
) -> None:
    workload = generate(
        producers,
        consumers,
        sessions=sessions,
        seed=seed,
        queue_size=queue_size,
        make_time=make_time,
        wait_time=wait_time,
    )
    assert len(workload.producers) == producers
    assert len(workload.consumers) == consumers
    assert workload.queue_size_per_producer == queue_size
    assert all(len(consumer.sessions) == sessions for consumer in workload.consumers)
    names = [agent.name for agent in (*workload.producers, *workload.consumers)]
    assert len(set(names)) == len(names)

    def in_range(value: float, base: float) -> bool:
        return 0.5 * base - 1e-6 <= value <= 1.5 * base + 1e-6

    for producer in workload.producers:
        assert producer.steps
        assert in_range(producer.republish_wait_time, wait_time)
        for step in producer.steps:
            assert step.quantity >= 1
            assert in_range(step.make_time, make_time)
    for consumer in workload.consumers:
        assert in_range(consumer.retry_wait_time, wait_time)
        for session in consumer.sessions:
            assert session, "a generated session is never empty"
            assert all(op.quantity >= 1 for op in session)

    # Cannot deadlock: every wanted product has a producer that makes only it.
    single = {p.steps[0].product for p in workload.producers if len(p.steps) == 1}
    assert {op.product for op in all_ops(workload)} <= single


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32), sessions=st.integers(1, 6))
def test_generated_removes_never_exceed_what_the_session_holds(seed: int, sessions: int) -> None:
    workload = generate(8, 6, sessions=sessions, seed=seed)
    for consumer in workload.consumers:
        for session in consumer.sessions:
            held: Counter[Product] = Counter()
            for op in session:
                if op.action == "add":
                    held[op.product] += op.quantity
                else:
                    assert 1 <= op.quantity <= held[op.product]
                    held[op.product] -= op.quantity


def test_generated_workloads_do_remove() -> None:
    # So that the property above is not vacuous.
    removes = [op for op in all_ops(generate(4, 20, sessions=4, seed=0)) if op.action == "remove"]
    assert removes
    assert any(op.quantity > 1 for op in removes)


@pytest.mark.parametrize(
    "arguments",
    [
        {"producers": 0},
        {"consumers": -1},
        {"sessions": -1},
        {"queue_size": 0},
    ],
)
def test_generate_refuses_impossible_sizes(arguments: dict[str, int]) -> None:
    with pytest.raises(WorkloadError) as error:
        generate(**arguments)
    assert str(error.value).startswith("<generated>: ")


# -- one-line errors for broken files ---------------------------------------------


def base_course() -> dict[str, Any]:
    """A small valid workload in the course's JSON format."""
    return {
        "products": {
            "coffee": {
                "product_type": "Coffee",
                "name": "Arabica",
                "price": 3,
                "acidity": 5.02,
                "roast_level": "LIGHT",
            },
            "tea": {"product_type": "Tea", "name": "Earl Grey", "price": 7, "type": "Black"},
        },
        "producers": [
            {
                "name": "prod1",
                "products": [["tea", 2, 0.1], ["coffee", 1, 0.2]],
                "republish_wait_time": 0.1,
            }
        ],
        "consumers": [
            {
                "name": "cons1",
                "retry_wait_time": 0.1,
                "carts": [
                    [
                        {"type": "add", "product": "tea", "quantity": 2},
                        {"type": "add", "product": "coffee", "quantity": 1},
                        {"type": "remove", "product": "tea", "quantity": 1},
                    ]
                ],
            },
            {"name": "cons2", "retry_wait_time": 0.2, "carts": []},
        ],
        "marketplace": {"queue_size_per_producer": 5},
    }


def base_toml() -> dict[str, Any]:
    """The same workload in mpmarket's TOML layout (written with ``to_toml``)."""
    return course_to_toml_data(base_course())


Mutation = Callable[[Any], Any]


def setting(*path: Any, value: Any) -> Mutation:
    def mutate(data: Any) -> Any:
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return data

    return mutate


def deleting(*path: Any) -> Mutation:
    def mutate(data: Any) -> Any:
        target = data
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
        return data

    return mutate


def appending_consumer_named(name: str) -> Mutation:
    def mutate(data: Any) -> Any:
        consumer = copy.deepcopy(data["consumers"][0])
        consumer["name"] = name
        data["consumers"].append(consumer)
        return data

    return mutate


# (id, format, mutation of the base data or raw file text, field, expected text)
BROKEN: list[tuple[str, str, Mutation | str, str, str]] = [
    ("json-not-json", "json", "products: tea\n", "", "expected valid JSON, got "),
    ("json-empty", "json", "", "", "expected valid JSON, got "),
    ("toml-not-toml", "toml", "[market\nqueue_size_per_producer = \n", "", "expected valid TOML"),
    ("toml-json-text", "toml", json.dumps(base_course()), "", "expected valid TOML"),
    ("json-top-level-list", "json", "[1, 2]", "(top level)", "expected a table (object)"),
    (
        "json-producer-unknown-product",
        "json",
        setting("producers", 0, "products", 1, 0, value="juice"),
        "producers[0].products[1][0]",
        "expected a product id among: coffee, tea, got 'juice'",
    ),
    (
        "toml-producer-unknown-product",
        "toml",
        setting("producers", 0, "make", 0, "product", value="juice"),
        "producers[0].make[0].product",
        "expected a product id among: coffee, tea, got 'juice'",
    ),
    (
        "json-consumer-unknown-product",
        "json",
        setting("consumers", 0, "carts", 0, 2, "product", value="juice"),
        "consumers[0].carts[0][2].product",
        "expected a product id among: coffee, tea, got 'juice'",
    ),
    (
        "toml-consumer-unknown-product",
        "toml",
        setting("consumers", 0, "sessions", 0, 1, "add", value="juice"),
        "consumers[0].sessions[0][1].add",
        "expected a product id among: coffee, tea, got 'juice'",
    ),
    (
        "json-missing-producer-name",
        "json",
        deleting("producers", 0, "name"),
        "producers[0].name",
        "expected a value (missing)",
    ),
    (
        "toml-missing-producer-name",
        "toml",
        deleting("producers", 0, "name"),
        "producers[0].name",
        "expected a value (missing)",
    ),
    (
        "json-missing-retry-wait-time",
        "json",
        deleting("consumers", 1, "retry_wait_time"),
        "consumers[1].retry_wait_time",
        "expected a value (missing)",
    ),
    (
        "toml-missing-retry-wait-time",
        "toml",
        deleting("consumers", 0, "retry_wait_time"),
        "consumers[0].retry_wait_time",
        "expected a value (missing)",
    ),
    (
        "json-missing-price",
        "json",
        deleting("products", "tea", "price"),
        "products.tea.price",
        "expected a value (required by Tea)",
    ),
    (
        "toml-missing-price",
        "toml",
        deleting("products", "coffee", "price"),
        "products.coffee.price",
        "expected a value (required by Coffee)",
    ),
    (
        "json-negative-op-quantity",
        "json",
        setting("consumers", 0, "carts", 0, 1, "quantity", value=-1),
        "consumers[0].carts[0][1].quantity",
        "expected a non-negative integer, got -1",
    ),
    (
        "json-negative-make-quantity",
        "json",
        setting("producers", 0, "products", 0, 1, value=-3),
        "producers[0].products[0][1]",
        "expected a non-negative integer, got -3",
    ),
    (
        "toml-negative-op-quantity",
        "toml",
        setting("consumers", 0, "sessions", 0, 2, "quantity", value=-2),
        "consumers[0].sessions[0][2].quantity",
        "expected a non-negative integer, got -2",
    ),
    (
        "json-negative-make-time",
        "json",
        setting("producers", 0, "products", 1, 2, value=-0.2),
        "producers[0].products[1][2]",
        "expected a non-negative number of seconds, got -0.2",
    ),
    (
        "toml-negative-make-time",
        "toml",
        setting("producers", 0, "make", 1, "time", value=-0.2),
        "producers[0].make[1].time",
        "expected a non-negative number of seconds, got -0.2",
    ),
    (
        "json-negative-republish-wait",
        "json",
        setting("producers", 0, "republish_wait_time", value=-1),
        "producers[0].republish_wait_time",
        "expected a non-negative number of seconds, got -1",
    ),
    (
        "toml-negative-retry-wait",
        "toml",
        setting("consumers", 1, "retry_wait_time", value=-0.5),
        "consumers[1].retry_wait_time",
        "expected a non-negative number of seconds, got -0.5",
    ),
    (
        "json-unknown-product-type",
        "json",
        setting("products", "tea", "product_type", value="Juice"),
        "products.tea.product_type",
        "expected a product type among Product, Tea, Coffee, got 'Juice'",
    ),
    (
        "toml-unknown-product-kind",
        "toml",
        setting("products", "tea", "kind", value="Juice"),
        "products.tea.kind",
        "expected a product type among Product, Tea, Coffee, got 'Juice'",
    ),
    (
        "json-op-type-buy",
        "json",
        setting("consumers", 0, "carts", 0, 0, "type", value="buy"),
        "consumers[0].carts[0][0].type",
        'expected "add" or "remove", got \'buy\'',
    ),
    (
        "toml-op-neither-add-nor-remove",
        "toml",
        setting("consumers", 0, "sessions", 0, 0, value={"buy": "tea", "quantity": 1}),
        "consumers[0].sessions[0][0]",
        'expected exactly one of "add" or "remove"',
    ),
    (
        "json-product-entry-two-items",
        "json",
        setting("producers", 0, "products", 0, value=["tea", 2]),
        "producers[0].products[0]",
        "expected [product id, quantity, seconds to make one], got ['tea', 2]",
    ),
    (
        "json-product-entry-not-a-list",
        "json",
        setting("producers", 0, "products", 1, value={"coffee": 1}),
        "producers[0].products[1]",
        "expected [product id, quantity, seconds to make one], got {'coffee': 1}",
    ),
    (
        "json-duplicate-consumer",
        "json",
        appending_consumer_named("cons1"),
        "consumers[2].name",
        "expected a name used only once, got 'cons1'",
    ),
    (
        "toml-duplicate-consumer",
        "toml",
        setting("consumers", 1, "name", value="cons1"),
        "consumers[1].name",
        "expected a name used only once, got 'cons1'",
    ),
    (
        "json-queue-size-zero",
        "json",
        setting("marketplace", "queue_size_per_producer", value=0),
        "marketplace.queue_size_per_producer",
        "expected a positive integer, got 0",
    ),
    (
        "toml-queue-size-zero",
        "toml",
        setting("market", "queue_size_per_producer", value=0),
        "market.queue_size_per_producer",
        "expected a positive integer, got 0",
    ),
]


def write_broken(tmp_path: Path, fmt: str, broken: Mutation | str) -> Path:
    path = tmp_path / f"broken.{fmt}"
    if isinstance(broken, str):
        text = broken
    elif fmt == "json":
        text = json.dumps(broken(base_course()), indent=2)
    else:
        text = to_toml(broken(base_toml()))
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("fmt", ["json", "toml"])
def test_the_unbroken_bases_load(fmt: str, tmp_path: Path) -> None:
    workload = load_workload(write_broken(tmp_path, fmt, lambda data: data))
    assert len(workload.consumers) == 2
    assert workload.queue_size_per_producer == 5


@pytest.mark.parametrize(
    ("fmt", "broken", "field", "expected"),
    [pytest.param(*case[1:], id=case[0]) for case in BROKEN],
)
def test_a_broken_workload_fails_with_one_line(
    fmt: str, broken: Mutation | str, field: str, expected: str, tmp_path: Path
) -> None:
    path = write_broken(tmp_path, fmt, broken)
    with pytest.raises(WorkloadError) as caught:
        load_workload(path)
    error = caught.value
    message = str(error)
    assert message.startswith(f"{path}: ")
    assert "\n" not in message
    assert error.source == str(path)
    assert error.field == field
    where = f"{path}: {field}: " if field else f"{path}: "
    assert message.startswith(where + "expected ")
    assert expected in message
    # Nothing chained: the one line is the whole story.
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__


@pytest.mark.parametrize(
    ("fmt", "broken", "exact"),
    [
        pytest.param(
            "json",
            setting("consumers", 0, "carts", 0, 1, "quantity", value=-1),
            "consumers[0].carts[0][1].quantity: expected a non-negative integer, got -1",
            id="negative-quantity",
        ),
        pytest.param(
            "json",
            setting("producers", 0, "products", 0, 0, value="juice"),
            "producers[0].products[0][0]: expected a product id among: coffee, tea, got 'juice'",
            id="unknown-product",
        ),
        pytest.param(
            "toml",
            setting("consumers", 1, "name", value="cons1"),
            "consumers[1].name: expected a name used only once, got 'cons1'",
            id="duplicate-consumer",
        ),
        pytest.param(
            "json",
            setting("marketplace", "queue_size_per_producer", value=0),
            "marketplace.queue_size_per_producer: expected a positive integer, got 0",
            id="queue-size-zero",
        ),
        pytest.param(
            "json",
            "[1, 2]",
            "(top level): expected a table (object), got [1, 2]",
            id="top-level-list",
        ),
        pytest.param(
            "json",
            "not json",
            "expected valid JSON, got Expecting value at line 1 column 1",
            id="not-json",
        ),
    ],
)
def test_exact_error_messages(fmt: str, broken: Mutation | str, exact: str, tmp_path: Path) -> None:
    path = write_broken(tmp_path, fmt, broken)
    with pytest.raises(WorkloadError) as caught:
        load_workload(path)
    assert str(caught.value) == f"{path}: {exact}"


@pytest.mark.parametrize("name", ["missing.json", "missing.in", "missing.toml"])
def test_a_missing_file_fails_with_one_line(name: str, tmp_path: Path) -> None:
    path = tmp_path / name
    with pytest.raises(WorkloadError) as caught:
        load_workload(path)
    assert str(caught.value) == f"{path}: expected an existing file"


def test_a_directory_fails_with_one_line(tmp_path: Path) -> None:
    with pytest.raises(WorkloadError) as caught:
        load_workload(tmp_path)
    assert str(caught.value).startswith(f"{tmp_path}: expected a readable UTF-8 text file, got ")


def test_a_file_that_is_not_utf8_fails_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b"[market]\n# caf\xe9\n")
    with pytest.raises(WorkloadError) as caught:
        load_workload(path)
    assert str(caught.value).startswith(f"{path}: expected a readable UTF-8 text file, got ")


def test_the_suffix_picks_the_format(tmp_path: Path) -> None:
    # Anything but *.toml is course JSON: TOML text in a .cfg file is not JSON.
    path = tmp_path / "workload.cfg"
    path.write_text(BOTH_TOML, encoding="utf-8")
    with pytest.raises(WorkloadError, match="expected valid JSON"):
        load_workload(path)
    upper = tmp_path / "WORKLOAD.TOML"
    upper.write_text(BOTH_TOML, encoding="utf-8")
    assert load_workload(upper).consumers[0].name == "ann"


@pytest.mark.parametrize(
    "bad_kind",
    [
        pytest.param(["Tea"], id="list"),
        pytest.param({"class": "Tea"}, id="table"),
    ],
)
@pytest.mark.parametrize("fmt", ["json", "toml"])
def test_a_product_type_that_is_not_a_string_fails_with_one_line(
    fmt: str, bad_kind: Any, tmp_path: Path
) -> None:
    key = "product_type" if fmt == "json" else "kind"
    path = write_broken(tmp_path, fmt, setting("products", "tea", key, value=bad_kind))
    with pytest.raises(WorkloadError) as caught:
        load_workload(path)
    assert str(caught.value) == (
        f"{path}: products.tea.{key}: expected a product type among Product, Tea, Coffee, "
        f"got {bad_kind!r}"
    )


def test_nan_and_infinite_times_are_refused(tmp_path: Path) -> None:
    for value in (math.inf, math.nan):
        path = write_broken(
            tmp_path, "toml", setting("producers", 0, "make", 0, "time", value=value)
        )
        with pytest.raises(WorkloadError, match=r"make\[0\]\.time: expected a non-negative number"):
            load_workload(path)


# -- anything else wrong is a WorkloadError too ------------------------------------

ANY_VALUE = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(["", "tea", "coffee", "Tea", "add", "remove", "x"]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=6,
)


def paths_in(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    paths = [prefix] if prefix else []
    if isinstance(data, dict):
        for key, value in data.items():
            paths += paths_in(value, (*prefix, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            paths += paths_in(value, (*prefix, index))
    return paths


@settings(max_examples=300, deadline=None)
@given(fmt=st.sampled_from(["json", "toml"]), choice=st.data(), value=ANY_VALUE)
def test_any_one_wrong_value_is_a_workload_error_or_loads(
    fmt: str, choice: st.DataObject, value: Any
) -> None:
    data = base_course() if fmt == "json" else base_toml()
    path = choice.draw(st.sampled_from(paths_in(data)))
    setting(*path, value=value)(data)
    try:
        workload = parse_course(data, "fuzz") if fmt == "json" else parse_toml(data, "fuzz")
    except WorkloadError as error:
        assert str(error).startswith("fuzz: ")
        assert "\n" not in str(error)
    else:
        assert isinstance(workload, Workload)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('[[producer]]\nname = "p"\n[products]\n', "producer: expected one of the known keys"),
        (
            "[marketplace]\nqueue_size_per_producer = 3\n[products]\n",
            "marketplace: expected one of",
        ),
        (
            '[products]\nt = { kind = "Tea", name = "T", price = 1, type = "H" }\n'
            '[[producers]]\nname = "p"\nrepublish_wait_time = 0.1\n'
            'make = [{ product = "t", quantitty = 2, time = 0.1 }]\n',
            "producers[0].make[0].quantitty: expected one of the known keys: product, quantity, time",
        ),
        (
            '[products]\nt = { kind = "Tea", name = "T", price = nan, type = "H" }\n',
            "products.t.price: expected a finite number, got nan",
        ),
        (
            '[products]\nt = { kind = "Tea", name = "T", price = 1, type = "H", colour = "red" }\n',
            "products.t.colour: expected only the fields of Tea: name, price, type",
        ),
    ],
)
def test_typos_and_non_finite_numbers_are_refused(tmp_path: Path, text: str, field: str) -> None:
    """A misspelled key must not load as a silently different workload."""
    path = tmp_path / "typo.toml"
    path.write_text(text)
    with pytest.raises(WorkloadError) as caught:
        load_workload(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert field in str(caught.value)
