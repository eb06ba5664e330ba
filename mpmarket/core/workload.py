"""Workloads: who produces what, who buys what, and the market's settings.

Three sources give the same frozen ``Workload``:

- the course's JSON format (``load_course_json``), as in the course's cases;
- mpmarket's own TOML format (``load_toml``), documented in docs/workloads.md;
- a seeded generator (``generate``) that never deadlocks.

Everything here is pure data: no processes, no market. Errors name the file,
the field and what was expected, as a ``WorkloadError``.
"""

from __future__ import annotations

import errno
import json
import os
import random
import stat
import tomllib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mpmarket.errors import WorkloadError
from mpmarket.products import Coffee, Product, Tea, product_from_spec

__all__ = [
    "ConsumerSpec",
    "Op",
    "ProducerSpec",
    "ProductionStep",
    "Workload",
    "dump_course_json",
    "dump_toml",
    "expected_purchases",
    "generate",
    "load_course_json",
    "load_toml",
    "load_workload",
    "purchase_line",
    "verify_orders",
]

DEFAULT_QUEUE_SIZE = 15


@dataclass(frozen=True)
class ProductionStep:
    """Make ``quantity`` units of ``product``, ``make_time`` seconds each."""

    product: Product
    quantity: int
    make_time: float


@dataclass(frozen=True)
class ProducerSpec:
    """A producer cycles forever over its steps."""

    name: str
    steps: tuple[ProductionStep, ...]
    republish_wait_time: float


@dataclass(frozen=True)
class Op:
    """One operation of a shopping session: add or remove ``quantity`` units."""

    action: Literal["add", "remove"]
    product: Product
    quantity: int


@dataclass(frozen=True)
class ConsumerSpec:
    """A consumer runs its sessions in order, placing an order after each."""

    name: str
    retry_wait_time: float
    sessions: tuple[tuple[Op, ...], ...]


@dataclass(frozen=True)
class Workload:
    """A whole run's worth of agents and the market's settings."""

    producers: tuple[ProducerSpec, ...]
    consumers: tuple[ConsumerSpec, ...]
    queue_size_per_producer: int
    source: str = "<generated>"

    @property
    def products_to_buy(self) -> int:
        return sum(expected_purchases(self).values())

    @property
    def sessions(self) -> int:
        return sum(len(consumer.sessions) for consumer in self.consumers)


def purchase_line(consumer: str, product: Product) -> str:
    """The output line for one bought unit, as the course prints it."""
    return f"{consumer} bought {product!r}"


def session_purchases(session: tuple[Op, ...]) -> Counter[Product]:
    """What one session buys: adds minus the removes that found a unit."""
    cart: Counter[Product] = Counter()
    for op in session:
        if op.action == "add":
            cart[op.product] += op.quantity
        else:
            cart[op.product] -= min(op.quantity, cart[op.product])
    return +cart


def expected_purchases(workload: Workload) -> Counter[str]:
    """The multiset of output lines that any correct run prints."""
    lines: Counter[str] = Counter()
    for consumer in workload.consumers:
        for session in consumer.sessions:
            for product, count in session_purchases(session).items():
                lines[purchase_line(consumer.name, product)] += count
    return lines


def verify_orders(workload: Workload, orders: list[tuple[str, list[Product]]]) -> list[str]:
    """Check each consumer's orders against its sessions, in order.

    The n-th order of a consumer must hold exactly what its n-th session adds
    minus what it removes. A consumer that died may have fewer orders, never
    different ones. Returns the violations (empty when all is well).
    """
    sessions = {spec.name: spec.sessions for spec in workload.consumers}
    placed: dict[str, int] = {}
    problems = []
    for consumer, products in orders:
        number = placed.get(consumer, 0)
        placed[consumer] = number + 1
        expected_sessions = sessions.get(consumer, ())
        if number >= len(expected_sessions):
            problems.append(
                f"{consumer} placed order {number + 1} but has {len(expected_sessions)} sessions"
            )
            continue
        expected = session_purchases(expected_sessions[number])
        if Counter(products) != expected:
            problems.append(
                f"{consumer}'s order {number + 1} holds {sorted(map(repr, products))}, "
                f"expected {sorted(map(repr, expected.elements()))}"
            )
    return problems


# -- validation helpers ------------------------------------------------------


class _Checker:
    """Reads fields out of parsed data, raising one clear error per mistake."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, field: str, expected: str, value: Any = ...) -> WorkloadError:
        got = None if value is ... else _describe(value)
        return WorkloadError(self.source, field, expected, got)

    def table(self, data: Any, field: str) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise self.fail(field, "a table (object)", data)
        return data

    def array(self, data: Any, field: str) -> list[Any]:
        if not isinstance(data, list):
            raise self.fail(field, "a list", data)
        return data

    def known(self, data: dict[str, Any], allowed: tuple[str, ...], field: str) -> None:
        """Refuse keys the format does not have: a typo must not pass silently."""
        for key in data:
            if key not in allowed:
                where = f"{field}.{key}" if field else key
                raise self.fail(where, f"one of the known keys: {', '.join(allowed)}")

    def get(self, data: dict[str, Any], key: str, field: str) -> Any:
        if key not in data:
            raise self.fail(f"{field}.{key}" if field else key, "a value (missing)")
        return data[key]

    def name(self, data: Any, field: str) -> str:
        if not isinstance(data, str) or not data.strip():
            raise self.fail(field, "a non-empty string", data)
        return data

    def count(self, data: Any, field: str, minimum: int = 0) -> int:
        if isinstance(data, bool) or not isinstance(data, int) or data < minimum:
            what = "a positive integer" if minimum == 1 else "a non-negative integer"
            raise self.fail(field, what, data)
        return data

    def seconds(self, data: Any, field: str) -> float:
        if (
            isinstance(data, bool)
            or not isinstance(data, int | float)
            or not 0 <= data < float("inf")
        ):
            raise self.fail(field, "a non-negative number of seconds", data)
        return float(data)

    def unique(self, names: list[str], field: str) -> None:
        seen: set[str] = set()
        for index, name in enumerate(names):
            if name in seen:
                raise self.fail(f"{field}[{index}].name", "a name used only once", name)
            seen.add(name)

    def product(self, catalog: dict[str, Product], key: Any, field: str) -> Product:
        if not isinstance(key, str) or key not in catalog:
            known = ", ".join(sorted(catalog)) or "none"
            raise self.fail(field, f"a product id among: {known}", key)
        return catalog[key]


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# A workload file is never read past this: 2,000 consumers of 20 sessions
# take 4 MB; a file this big is not a workload (a log, /dev/zero behind a link).
MAX_WORKLOAD_BYTES = 64 * 1024 * 1024


def _read(path: Path) -> str:
    """The text of a workload file: a regular file or a pipe, bounded, UTF-8.

    Opened without blocking, so that a FIFO no one writes to ends at once (as
    an empty file) instead of hanging; a pipe with a writer, such as bash's
    ``<(mpmarket gen ...)``, is read to its end.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise WorkloadError(str(path), "", "an existing file") from None
    except OSError as error:
        raise WorkloadError(str(path), "", "a readable UTF-8 text file", str(error)) from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):  # as reading it would say
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
            raise WorkloadError(str(path), "", "a regular file or a pipe")
        os.set_blocking(fd, True)  # a pipe with a writer: wait for its data
        with os.fdopen(fd, "rb", closefd=False) as file:
            data = file.read(MAX_WORKLOAD_BYTES + 1)
        if not data and stat.S_ISFIFO(mode):
            raise WorkloadError(str(path), "", "a pipe a workload is written to", "nothing")
    except OSError as error:
        raise WorkloadError(str(path), "", "a readable UTF-8 text file", str(error)) from None
    finally:
        os.close(fd)
    if len(data) > MAX_WORKLOAD_BYTES:
        raise WorkloadError(str(path), "", f"a file of at most {MAX_WORKLOAD_BYTES >> 20} MiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise WorkloadError(str(path), "", "a readable UTF-8 text file", str(error)) from None


# -- the file formats: the course's JSON and mpmarket's TOML ---------------------


def load_course_json(path: str | Path) -> Workload:
    """Load a workload in the course's JSON format (see docs/workloads.md)."""
    path = Path(path)
    text = _read(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise WorkloadError(
            str(path), "", "valid JSON", f"{error.msg} at line {error.lineno} column {error.colno}"
        ) from None
    return parse_course(data, str(path))


@dataclass(frozen=True)
class _Format:
    """Where a file format keeps each part of a workload, and how it spells steps and ops."""

    kind_key: str  # the key naming a product's class
    steps_key: str  # a producer's list of production steps
    sessions_key: str  # a consumer's list of sessions
    market_key: str  # the table of market settings
    agents_required: bool  # must "producers" and "consumers" be present?
    read_step: Callable[[_Checker, dict[str, Product], Any, str], ProductionStep]
    read_op: Callable[[_Checker, dict[str, Product], Any, str], Op]


def _course_step(
    check: _Checker, catalog: dict[str, Product], entry: Any, where: str
) -> ProductionStep:
    if not isinstance(entry, list) or len(entry) != 3:
        raise check.fail(where, "[product id, quantity, seconds to make one]", entry)
    return ProductionStep(
        check.product(catalog, entry[0], f"{where}[0]"),
        check.count(entry[1], f"{where}[1]"),
        check.seconds(entry[2], f"{where}[2]"),
    )


def _course_op(check: _Checker, catalog: dict[str, Product], op: Any, where: str) -> Op:
    op = check.table(op, where)
    check.known(op, ("type", "product", "quantity"), where)
    action = check.get(op, "type", where)
    if action not in ("add", "remove"):
        raise check.fail(f"{where}.type", '"add" or "remove"', action)
    return Op(
        action,
        check.product(catalog, check.get(op, "product", where), f"{where}.product"),
        check.count(check.get(op, "quantity", where), f"{where}.quantity"),
    )


def _toml_step(
    check: _Checker, catalog: dict[str, Product], step: Any, where: str
) -> ProductionStep:
    step = check.table(step, where)
    check.known(step, ("product", "quantity", "time"), where)
    return ProductionStep(
        check.product(catalog, check.get(step, "product", where), f"{where}.product"),
        check.count(step.get("quantity", 1), f"{where}.quantity"),
        check.seconds(check.get(step, "time", where), f"{where}.time"),
    )


_ACTIONS: tuple[Literal["add"], Literal["remove"]] = ("add", "remove")


def _toml_op(check: _Checker, catalog: dict[str, Product], op: Any, where: str) -> Op:
    op = check.table(op, where)
    actions = [a for a in _ACTIONS if a in op]
    if len(actions) != 1:
        raise check.fail(where, 'exactly one of "add" or "remove"', op)
    action = actions[0]
    unknown = set(op) - {action, "quantity"}
    if unknown:
        raise check.fail(f"{where}.{sorted(unknown)[0]}", '"add", "remove" or "quantity" only')
    return Op(
        action,
        check.product(catalog, op[action], f"{where}.{action}"),
        check.count(op.get("quantity", 1), f"{where}.quantity"),
    )


_COURSE = _Format(
    "product_type", "products", "carts", "marketplace", True, _course_step, _course_op
)
_TOML = _Format("kind", "make", "sessions", "market", False, _toml_step, _toml_op)


def _parse(data: Any, source: str, fmt: _Format) -> Workload:
    """Validate parsed data laid out as ``fmt`` says, and build a Workload."""
    check = _Checker(source)
    root = check.table(data, "(top level)")
    check.known(root, ("products", "producers", "consumers", fmt.market_key), "")
    catalog: dict[str, Product] = {}
    for key, spec in check.table(check.get(root, "products", ""), "products").items():
        field = f"products.{key}"
        spec = check.table(spec, field)
        kind = check.get(spec, fmt.kind_key, field)
        fields = {k: v for k, v in spec.items() if k != fmt.kind_key}
        catalog[key] = product_from_spec(
            fields, kind=kind, source=source, where=field, kind_key=fmt.kind_key
        )

    def agents(key: str) -> list[Any]:
        value = check.get(root, key, "") if fmt.agents_required else root.get(key, [])
        return check.array(value, key)

    producers = []
    for index, spec in enumerate(agents("producers")):
        field = f"producers[{index}]"
        spec = check.table(spec, field)
        check.known(spec, ("name", fmt.steps_key, "republish_wait_time"), field)
        entries = check.array(check.get(spec, fmt.steps_key, field), f"{field}.{fmt.steps_key}")
        steps = [
            fmt.read_step(check, catalog, entry, f"{field}.{fmt.steps_key}[{number}]")
            for number, entry in enumerate(entries)
        ]
        wait = check.get(spec, "republish_wait_time", field)
        producers.append(
            ProducerSpec(
                check.name(check.get(spec, "name", field), f"{field}.name"),
                tuple(steps),
                check.seconds(wait, f"{field}.republish_wait_time"),
            )
        )

    consumers = []
    for index, spec in enumerate(agents("consumers")):
        field = f"consumers[{index}]"
        spec = check.table(spec, field)
        check.known(spec, ("name", fmt.sessions_key, "retry_wait_time"), field)
        sessions = []
        key = fmt.sessions_key
        for number, session in enumerate(
            check.array(check.get(spec, key, field), f"{field}.{key}")
        ):
            where = f"{field}.{key}[{number}]"
            ops = check.array(session, where)
            sessions.append(
                tuple(fmt.read_op(check, catalog, op, f"{where}[{i}]") for i, op in enumerate(ops))
            )
        wait = check.get(spec, "retry_wait_time", field)
        consumers.append(
            ConsumerSpec(
                check.name(check.get(spec, "name", field), f"{field}.name"),
                check.seconds(wait, f"{field}.retry_wait_time"),
                tuple(sessions),
            )
        )

    market = check.table(root.get(fmt.market_key, {}), fmt.market_key)
    check.known(market, ("queue_size_per_producer",), fmt.market_key)
    queue_size = check.count(
        market.get("queue_size_per_producer", DEFAULT_QUEUE_SIZE),
        f"{fmt.market_key}.queue_size_per_producer",
        minimum=1,
    )
    check.unique([p.name for p in producers], "producers")
    check.unique([c.name for c in consumers], "consumers")
    return Workload(tuple(producers), tuple(consumers), queue_size, source)


def parse_course(data: Any, source: str) -> Workload:
    """Validate parsed course JSON and build a Workload."""
    return _parse(data, source, _COURSE)


def parse_toml(data: Any, source: str) -> Workload:
    """Validate parsed TOML and build a Workload."""
    return _parse(data, source, _TOML)


def load_toml(path: str | Path) -> Workload:
    """Load a workload in mpmarket's TOML format (see docs/workloads.md and configs/)."""
    path = Path(path)
    text = _read(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise WorkloadError(str(path), "", "valid TOML", str(error)) from None
    return parse_toml(data, str(path))


def load_workload(path: str | Path) -> Workload:
    """Load a workload file: ``*.toml`` is mpmarket's format, anything else course JSON."""
    path = Path(path)
    if path.suffix.lower() == ".toml":
        return load_toml(path)
    return load_course_json(path)


# -- the generator -------------------------------------------------------------

CATALOG: tuple[Product, ...] = (
    Tea("Linden", 9, "Herbal"),
    Coffee("Indonezia", 1, 5.05, "MEDIUM"),
    Tea("Earl Grey", 7, "Black"),
    Coffee("Arabica", 3, 5.02, "LIGHT"),
    Tea("Sencha", 11, "Green"),
    Coffee("Robusta", 2, 4.8, "DARK"),
    Tea("Rooibos", 6, "Herbal"),
    Coffee("Kenya AA", 5, 6.1, "MEDIUM"),
)


def generate(
    producers: int = 4,
    consumers: int = 8,
    *,
    sessions: int = 3,
    seed: int = 0,
    queue_size: int = DEFAULT_QUEUE_SIZE,
    make_time: float = 0.004,
    wait_time: float = 0.01,
    kinds: int | None = None,
) -> Workload:
    """A random workload, reproducible from ``seed``, that cannot deadlock.

    A run can only starve when every producer of a wanted product is stuck with
    its slots full of products nobody wants. So the first producers each make
    a single kind (one per kind in play): a single-kind producer with full
    slots has its whole queue on sale for whoever waits on that kind. Other
    producers make mixes of those kinds, and consumers only want kinds in play.
    Removes never exceed what the session holds. ``kinds`` (default: one per
    producer, up to eight) leaves producers beyond the first ``kinds`` making
    mixes only: any of them can die without starving anyone.
    """
    if producers < 1 or consumers < 0 or sessions < 0 or queue_size < 1:
        raise WorkloadError(
            "<generated>", "producers/consumers/sessions/queue-size", "at least 1/0/0/1"
        )
    rng = random.Random(seed)
    if kinds is not None and not 1 <= kinds <= min(producers, len(CATALOG)):
        raise WorkloadError(
            "<generated>", "kinds", f"from 1 to {min(producers, len(CATALOG))}", str(kinds)
        )
    in_play = list(CATALOG[: kinds if kinds is not None else min(producers, len(CATALOG))])

    def times(base: float) -> float:
        return round(base * rng.uniform(0.5, 1.5), 6)

    producer_specs = []
    for index in range(producers):
        if index < len(in_play):
            made = [in_play[index]]
        else:
            made = rng.sample(in_play, rng.randint(1, min(3, len(in_play))))
        steps = tuple(ProductionStep(p, rng.randint(1, 3), times(make_time)) for p in made)
        producer_specs.append(ProducerSpec(f"prod{index + 1}", steps, times(wait_time)))

    consumer_specs = []
    for index in range(consumers):
        session_list = []
        for _ in range(sessions):
            ops: list[Op] = []
            held: Counter[Product] = Counter()
            for _ in range(rng.randint(1, 4)):
                if held and rng.random() < 0.25:
                    product = rng.choice(sorted(held, key=repr))
                    quantity = rng.randint(1, held[product])
                    held[product] -= quantity
                    held = +held
                    ops.append(Op("remove", product, quantity))
                else:
                    product = rng.choice(in_play)
                    quantity = rng.randint(1, 3)
                    held[product] += quantity
                    ops.append(Op("add", product, quantity))
            session_list.append(tuple(ops))
        consumer_specs.append(
            ConsumerSpec(f"cons{index + 1}", times(wait_time), tuple(session_list))
        )
    return Workload(tuple(producer_specs), tuple(consumer_specs), queue_size)


# -- writing workloads -----------------------------------------------------------


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
