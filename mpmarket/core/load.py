"""Load a workload file and validate it: the course's JSON and mpmarket's TOML.

``load_workload`` picks the format by the file's suffix; ``-`` reads the
workload from stdin (named ``<stdin>`` in errors) and picks the format by its
content (``sniff_format``). ``load_course_json`` and ``load_toml`` read one
format each, ``parse_course`` and ``parse_toml``
validate data already parsed. Both formats go through one validator, which
names the file, the field and what was expected, as a ``WorkloadError``.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mpmarket.core.workload import (
    DEFAULT_QUEUE_SIZE,
    ConsumerSpec,
    Op,
    ProducerSpec,
    ProductionStep,
    Workload,
)
from mpmarket.errors import WorkloadError
from mpmarket.products import Product, product_from_spec

__all__ = [
    "STDIN",
    "STDIN_NAME",
    "load_course_json",
    "load_toml",
    "load_workload",
    "parse_course",
    "parse_toml",
    "sniff_format",
]

# The path that means stdin, as most command-line tools spell it, and its name in errors.
STDIN = "-"
STDIN_NAME = "<stdin>"


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
    ``<(mpmarket gen ...)``, is read to its end. ``-`` is stdin.
    """
    if str(path) == STDIN:
        return _read_stdin()
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


def _read_stdin() -> str:
    """All of stdin, as UTF-8 text (whatever the locale says stdin's encoding is)."""
    stream = sys.stdin
    if stream is None:
        raise WorkloadError(STDIN_NAME, "", "a workload on stdin", "stdin is closed")
    try:
        limit = MAX_WORKLOAD_BYTES + 1
        data = stream.buffer.read(limit) if hasattr(stream, "buffer") else stream.read(limit)
        if len(data) > MAX_WORKLOAD_BYTES:
            raise WorkloadError(STDIN_NAME, "", f"at most {MAX_WORKLOAD_BYTES >> 20} MiB")
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        return text.removeprefix("\ufeff")
    except (OSError, ValueError) as error:  # UnicodeDecodeError is a ValueError
        raise WorkloadError(STDIN_NAME, "", "a readable UTF-8 text stream", str(error)) from None


def _name(path: Path) -> str:
    """How errors and reports name the file: ``<stdin>`` for ``-``."""
    return STDIN_NAME if str(path) == STDIN else str(path)


# -- the file formats: the course's JSON and mpmarket's TOML ---------------------


def load_course_json(path: str | Path) -> Workload:
    """Load a workload in the course's JSON format (see docs/workloads.md)."""
    path = Path(path)
    return _parse_json_text(_read(path), _name(path))


def _parse_json_text(text: str, source: str) -> Workload:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise WorkloadError(
            source, "", "valid JSON", f"{error.msg} at line {error.lineno} column {error.colno}"
        ) from None
    except RecursionError:  # the decoder recurses once per level
        raise WorkloadError(
            source, "", "valid JSON", "arrays or objects nested too deeply"
        ) from None
    return parse_course(data, source)


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
    return _parse_toml_text(_read(path), _name(path))


def _parse_toml_text(text: str, source: str) -> Workload:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise WorkloadError(source, "", "valid TOML", str(error)) from None
    except RecursionError:  # the decoder recurses once per level
        raise WorkloadError(
            source, "", "valid TOML", "arrays or tables nested too deeply"
        ) from None
    return parse_toml(data, source)


def sniff_format(text: str) -> Literal["course", "toml"]:
    """The format of a workload read from stdin, from its content.

    The course's JSON is an object, so its first character (after blanks and a
    byte-order mark) is ``{``; a TOML document never starts with ``{`` (its
    top level is ``key = value`` lines and ``[table]`` headers). Anything else,
    empty input included, is read as TOML.
    """
    return "course" if text.lstrip("\ufeff \t\r\n").startswith("{") else "toml"


def load_workload(path: str | Path) -> Workload:
    """Load a workload file: ``*.toml`` is mpmarket's format, anything else course JSON.

    ``-`` reads stdin, whose format ``sniff_format`` tells from the content.
    """
    path = Path(path)
    if str(path) == STDIN:
        text = _read_stdin()
        if sniff_format(text) == "course":
            return _parse_json_text(text, STDIN_NAME)
        return _parse_toml_text(text, STDIN_NAME)
    if path.suffix.lower() == ".toml":
        return load_toml(path)
    return load_course_json(path)
