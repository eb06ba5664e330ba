"""The workload parsers fed mutated course JSON and TOML: a workload or a WorkloadError, never a traceback.

Seeds: a course JSON case and the TOML files of configs/. Mutations of the
parsed tree (a value replaced by any JSON value, a key dropped or renamed, a
list emptied or repeated) and of the text (bytes flipped, cut, inserted,
repeated; a value nested thousands deep). Each goes through the loaders the
CLI uses (``load_workload`` on a file), so the decoding of bytes, JSON and
TOML is fuzzed too.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mpmarket.core.load import load_workload
from mpmarket.errors import WorkloadError
from tests.fuzz import campaign

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

COURSE = {
    "products": {
        "id1": {
            "product_type": "Coffee",
            "name": "Indonezia",
            "acidity": 5.05,
            "roast_level": "MEDIUM",
            "price": 1,
        },
        "id2": {"product_type": "Tea", "name": "Linden", "type": "Herbal", "price": 9},
    },
    "producers": [
        {
            "name": "prod1",
            "products": [["id2", 2, 0.18], ["id1", 1, 0.23]],
            "republish_wait_time": 0.15,
        }
    ],
    "consumers": [
        {
            "name": "cons1",
            "carts": [
                [
                    {"type": "add", "product": "id2", "quantity": 2},
                    {"type": "remove", "product": "id2", "quantity": 1},
                    {"type": "add", "product": "id1", "quantity": 1},
                ]
            ],
            "retry_wait_time": 0.1,
        }
    ],
    "marketplace": {"queue_size_per_producer": 3},
}

_SEEDS: list[tuple[str, Any]] = [("json", COURSE)] + [
    ("toml", tomllib.loads(path.read_text(encoding="utf-8")))
    for path in sorted(CONFIGS.glob("*.toml"))
]

_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)


def _paths(tree: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [at]
    if isinstance(tree, dict):
        for key, value in tree.items():
            found += _paths(value, (*at, key))
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            found += _paths(value, (*at, index))
    return found


def _get(tree: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        tree = tree[step]
    return tree


@st.composite
def _mutated_tree(draw: st.DrawFn, tree: Any) -> Any:
    tree = json.loads(json.dumps(tree, default=str))  # a copy (TOML dates become strings)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(tree)))
        if not path:
            if draw(st.booleans()):
                tree = draw(_json_values)
            continue
        parent, last = _get(tree, path[:-1]), path[-1]
        kind = draw(st.sampled_from(["replace", "drop", "rename", "empty", "repeat"]))
        if kind == "replace":
            parent[last] = draw(_json_values)
        elif kind == "drop":
            del parent[last]
        elif kind == "rename" and isinstance(parent, dict):
            parent[draw(st.text(max_size=8))] = parent.pop(last)
        elif kind == "empty" and isinstance(parent[last], (list, dict)):
            parent[last] = type(parent[last])()
        elif kind == "repeat" and isinstance(parent, list):
            parent.insert(last, parent[last])
    return tree


def _toml_text(value: Any, key: str = "") -> str:
    """Just enough of a TOML writer: inline tables, arrays, basic strings."""
    if isinstance(value, dict):
        body = ", ".join(f"{json.dumps(k)} = {_toml_text(v)}" for k, v in value.items())
        return "{" + body + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_text(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return '""'
    if isinstance(value, float) and value != value:
        return "nan"
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return "inf" if value > 0 else "-inf"
    return json.dumps(value)


def _text_of(kind: str, tree: Any) -> str:
    if kind == "json":
        return json.dumps(tree)
    if not isinstance(tree, dict):
        return f"x = {_toml_text(tree)}"
    return "\n".join(f"{json.dumps(k)} = {_toml_text(v)}" for k, v in tree.items())


@st.composite
def _mutated_text(draw: st.DrawFn, text: str) -> bytes:
    data = bytearray(text.encode("utf-8"))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["flip", "cut", "insert", "repeat", "deep"]))
        if kind == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "cut":
            del data[at : at + draw(st.integers(1, 64))]
        elif kind == "insert":
            data[at:at] = draw(
                st.binary(min_size=1, max_size=8) | st.sampled_from([b"[", b"{", b'"', b"\\u"])
            )
        elif kind == "repeat":
            data[at:at] = data[at : at + draw(st.integers(1, 64))]
        else:
            depth = draw(st.sampled_from([100, 990, 5000, 100_000]))
            data[at:at] = b"[" * depth + b"]" * depth
    return bytes(data)


@st.composite
def _workload_files(draw: st.DrawFn) -> tuple[str, bytes]:
    kind, seed = draw(st.sampled_from(_SEEDS))
    tree = draw(_mutated_tree(seed)) if draw(st.booleans()) else seed
    text = _text_of(kind, tree)
    data = draw(_mutated_text(text)) if draw(st.booleans()) else text.encode("utf-8")
    return kind, data


def test_mutated_course_json_and_toml_give_a_workload_or_one_workload_error(tmp_path):
    files = {"json": tmp_path / "fuzzed.json", "toml": tmp_path / "fuzzed.toml"}

    @settings(
        max_examples=campaign.examples() * 5,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(_workload_files())
    def one_round(case: tuple[str, bytes]) -> None:
        kind, data = case
        path = files[kind]
        path.write_bytes(data)
        campaign.FIGURES["inputs tried"] += 1
        campaign.FIGURES["workload inputs"] += 1
        try:
            load_workload(path)
        except WorkloadError as error:
            assert "\n" not in str(error)
        except Exception as error:
            campaign.failed(
                "parser tracebacks", f"{type(error).__name__}: {error} on {data[:200]!r}"
            )

    campaign.run(one_round)
    assert not campaign.FAILURES, campaign.FAILURES


def test_the_seeds_load():
    for kind, seed in _SEEDS:
        assert kind in ("json", "toml") and seed
    for path in sorted(CONFIGS.glob("*.toml")):
        assert load_workload(path).producers
