"""Write a workload: mpmarket's TOML (``dump_toml``) or the course's JSON (``dump_course_json``).

Both load back (``mpmarket.core.load``) as the same workload.
"""

from __future__ import annotations

import json
from typing import Any

from mpmarket.core.workload import Workload
from mpmarket.products import Product

__all__ = ["dump_course_json", "dump_toml"]


def _product_ids(workload: Workload) -> dict[Product, str]:
    """Readable, unique ids for the products of a workload, in order of use."""
    ids: dict[Product, str] = {}
    used: set[str] = set()
    products = [step.product for spec in workload.producers for step in spec.steps]
    products += [op.product for spec in workload.consumers for s in spec.sessions for op in s]
    for product in products:
        if product in ids:
            continue
        safe = "".join(c if c.isascii() and c.isalnum() else " " for c in product.name)
        base = "-".join(safe.lower().split())  # a TOML bare key
        candidate, number = base or "product", 2
        while candidate in used:
            candidate, number = f"{base}-{number}", number + 1
        ids[product] = candidate
        used.add(candidate)
    return ids


def _product_fields(product: Product) -> dict[str, Any]:
    return {field: getattr(product, field) for field in product.__dataclass_fields__}


def _toml(value: Any) -> str:
    """One TOML value on one line (strings, numbers, inline tables, arrays)."""
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{key} = {_toml(item)}" for key, item in value.items()) + " }"
    return "[" + ", ".join(_toml(item) for item in value) + "]"


def dump_toml(workload: Workload) -> str:
    """The workload in mpmarket's TOML format, laid out for a person to edit."""
    ids = _product_ids(workload)
    lines = [
        "# An mpmarket workload: run it with `mpmarket run FILE`.",
        "",
        "[market]",
        f"queue_size_per_producer = {workload.queue_size_per_producer}",
        "",
        "[products]",
    ]
    for product, key in ids.items():
        lines.append(
            f"{key} = {_toml({'kind': type(product).__name__} | _product_fields(product))}"
        )
    for producer in workload.producers:
        lines += ["", "[[producers]]", f"name = {_toml(producer.name)}"]
        lines.append(f"republish_wait_time = {producer.republish_wait_time!r}")
        lines.append("make = [")
        for step in producer.steps:
            entry = {
                "product": ids[step.product],
                "quantity": step.quantity,
                "time": step.make_time,
            }
            lines.append(f"  {_toml(entry)},")
        lines.append("]")
    for consumer in workload.consumers:
        lines += ["", "[[consumers]]", f"name = {_toml(consumer.name)}"]
        lines.append(f"retry_wait_time = {consumer.retry_wait_time!r}")
        lines.append("sessions = [")
        for session in consumer.sessions:
            ops = [{op.action: ids[op.product], "quantity": op.quantity} for op in session]
            lines.append(f"  {_toml(ops)},")
        lines.append("]")
    return "\n".join(lines) + "\n"


def dump_course_json(workload: Workload) -> str:
    """The workload in the course's JSON format."""
    ids = _product_ids(workload)
    document = {
        "products": {
            key: {"product_type": type(product).__name__} | _product_fields(product)
            for product, key in ids.items()
        },
        "producers": [
            {
                "name": spec.name,
                "products": [[ids[s.product], s.quantity, s.make_time] for s in spec.steps],
                "republish_wait_time": spec.republish_wait_time,
            }
            for spec in workload.producers
        ],
        "consumers": [
            {
                "name": spec.name,
                "retry_wait_time": spec.retry_wait_time,
                "carts": [
                    [
                        {"type": op.action, "product": ids[op.product], "quantity": op.quantity}
                        for op in session
                    ]
                    for session in spec.sessions
                ],
            }
            for spec in workload.consumers
        ],
        "marketplace": {"queue_size_per_producer": workload.queue_size_per_producer},
    }
    return json.dumps(document, indent=2) + "\n"
