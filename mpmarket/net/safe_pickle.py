"""Only the market's own types cross the wire: the allow-list unpicklers of both ends.

``multiprocessing.managers`` speaks pickle, and a pickle is a program: a
``GLOBAL`` opcode names any callable, ``REDUCE`` calls it. The stock server
unpickles whatever a holder of the key sends (``os.system`` included); here
both ends read with a ``pickle.Unpickler`` (the C one: subclassing it keeps
``load`` C-fast) whose ``find_class`` answers only the names of an allow-list
and refuses everything else before anything is built ("Restricting Globals"
in the ``pickle`` documentation):

- **requests** (``load_request``, the server): the product classes, nothing
  else. A request is ``(ident, method, args, kwds)`` of builtin scalars and
  containers, and products.
- **answers** (``load_reply``, the clients): the products, the snapshots
  (``MarketBooks``, ``MarketSnapshot``, ``MarketWaits``, ``AgentInfo``),
  mpmarket's exceptions and the builtin ``Exception`` classes a method can
  raise (never ``SystemExit`` nor ``KeyboardInterrupt``).

What ``find_class`` does not cover is closed too: persistent ids are refused
(``persistent_load``); the extension codes (``EXT1/2/4``) resolve through
``find_class``, as ``INST`` and ``OBJ`` do; every callable a pickle can reach
is thus an allowed class, so ``REDUCE``, ``NEWOBJ`` and ``OBJ`` can only build
those. After ``load`` each product is checked (a request's arguments; in an
answer, every product, which its class's maker recorded): its state must be
its fields and nothing else (``BUILD`` on a frozen dataclass writes its
``__dict__`` directly: a forged hash, a field swapped after ``__post_init__``
are refused), and each field must be a scalar of its type (a ``str`` or a
number; a ``Tea`` whose name is a list is refused). A container argument
nested deeper than ``MAX_DEPTH`` is refused (a pickle builds a 100,000-deep
list without recursion; its ``repr`` or ``hash`` would not).

A fast path keeps the cost near nothing (``_LITERAL_ONLY``): a pickle proved
to hold no opcode that reaches a callable builds literals only, and
``pickle.loads`` reads it; most requests and answers are such.

Two outcomes on the server: ``RefusedPayload`` (a name off the list, a
persistent id, a tampered product: whoever sent it meant harm; the server
answers, logs one line and hangs up) and ``InvalidArgumentError`` (a product
whose fields are not scalars, an argument too deep: answered, the connection
lives on, as for any other bad argument). A client refuses any of them in an
answer with ``UnsafeReplyError``.
"""

from __future__ import annotations

import builtins
import dataclasses
import functools
import importlib
import io
import itertools
import pickle
import re
from collections.abc import Iterable
from typing import Any, ClassVar

from mpmarket import errors
from mpmarket.core.books import MARKET_OPERATIONS
from mpmarket.errors import InvalidArgumentError, UnsafeReplyError
from mpmarket.products import PRODUCT_TYPES, Product

__all__ = [
    "MAX_DEPTH",
    "REPLY_NAMES",
    "REQUEST_NAMES",
    "RefusedPayload",
    "load_reply",
    "load_request",
    "refused",
]

# How deep a request's container argument may nest. The market's operations
# take scalars and products only; the stock proxy's tuples and dicts add two.
MAX_DEPTH = 32

_PRODUCTS = {("mpmarket.products", name): cls for name, cls in PRODUCT_TYPES.items()}

# What a request may name: the products, nothing else.
REQUEST_NAMES: frozenset[tuple[str, str]] = frozenset(_PRODUCTS)

# What an answer may name besides: the snapshots, mpmarket's exceptions, the
# builtin exceptions a method can raise. Resolved as pickle resolves names, on
# first use (``mpmarket.net.wire`` is a module of this layer, above none of it).
REPLY_NAMES: frozenset[tuple[str, str]] = REQUEST_NAMES | {
    ("mpmarket.core.books", "MarketBooks"),
    ("mpmarket.core.books", "MarketSnapshot"),
    ("mpmarket.core.books", "MarketWaits"),
    ("mpmarket.net.wire", "AgentInfo"),
    *(("mpmarket.errors", name) for name in errors.__all__),
    *(
        ("builtins", name)
        for name, value in vars(builtins).items()
        if isinstance(value, type) and issubclass(value, Exception)
    ),
}

_STR = (str,)
_NUMBER = (int, float)
# Each product class's fields, in order, with the scalar types each may hold.
_FIELDS: dict[type[Product], tuple[tuple[str, tuple[type, ...]], ...]] = {
    cls: tuple(
        (field.name, _STR if field.type in ("str", str) else _NUMBER)
        for field in dataclasses.fields(cls)
    )
    for cls in PRODUCT_TYPES.values()
}
_NAMES = {cls: tuple(name for name, _ in fields) for cls, fields in _FIELDS.items()}
# Every tuple of field types a valid product of each class has.
_TYPES = {
    cls: frozenset(itertools.product(*(kinds for _, kinds in fields)))
    for cls, fields in _FIELDS.items()
}
_SCALARS = frozenset({str, int, float, bool, type(None), bytes})
_CONTAINERS = frozenset({tuple, list, dict, set, frozenset})


# The opcodes that reach a callable or a class: by name (GLOBAL, STACK_GLOBAL,
# INST, the extension codes), by persistent id, or on the stack (OBJ, REDUCE,
# BUILD, NEWOBJ, NEWOBJ_EX). A pickle without any of them builds builtin
# literals only: None, bools, numbers, strings, bytes and their containers.
_REACHING = rb"ciobRPQ\x81\x82\x83\x84\x92\x93"
# The strings a request or an answer starts with: the well-known identities,
# the methods, the answers' kinds (``mpmarket.net.wire``, the manager's own).
_ENVELOPE_STRINGS = (
    "market",
    "session",
    *MARKET_OPERATIONS,
    "hello",
    "agents",
    "accept_connection",
    "shutdown",
    "#RETURN",
    "#ERROR",
)


# A pickle of literals only, as pickle reads it: the protocol, a frame, then
# marks, memos and those strings as short strings (their bytes are data, so
# they are matched whole, never scanned), then no byte of a reaching opcode
# at all, even as another opcode's argument (``K\x62``, the small int 98,
# has BUILD's byte: such pickles, and every pickle that carries a product,
# go through the allow-list unpickler instead). Exact, not complete: a
# pickle this matches builds literals only, so ``pickle.loads`` reads it
# (the common answers and requests without a product: about 0.2 us where an
# unpickler object costs 0.6 us more, on both ends of every call).
def _short_strings(texts: Iterable[str]) -> bytes:
    """A pattern for these strings as pickle's short strings, grouped by length (fast)."""
    by_length: dict[int, list[bytes]] = {}
    for text in sorted(set(texts)):
        data = text.encode()
        by_length.setdefault(len(data), []).append(re.escape(data))
    return (
        rb"\x8c(?:"
        + b"|".join(
            re.escape(bytes([length])) + b"(?:" + b"|".join(names) + b")"
            for length, names in sorted(by_length.items())
        )
        + b")"
    )


_LITERAL_ONLY = re.compile(
    rb"(?:\x80.)?(?:\x95.{8})?(?:\(|\x94|"
    + _short_strings(_ENVELOPE_STRINGS)
    + rb")*+[^"
    + _REACHING
    + rb"]*+",
    re.DOTALL,
)


class RefusedPayload(pickle.UnpicklingError):
    """A pickle that names what the protocol never sends: refused before it is built."""


def _clean(text: str, limit: int = 80) -> str:
    """A name from a pickle, fit for one log line: quoted, escaped, cut."""
    return repr(text[:limit]) + ("..." if len(text) > limit else "")


@functools.cache
def _resolve(module: str, name: str) -> Any:
    return getattr(importlib.import_module(module), name)


class _RequestUnpickler(pickle.Unpickler):
    """The C unpickler with the request allow-list."""

    names: ClassVar[dict[tuple[str, str], Any]] = dict(_PRODUCTS)

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.names[module, name]
        except KeyError:
            raise RefusedPayload(
                f"{_clean(f'{module}.{name}')} is not a type the market takes"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise RefusedPayload("a persistent id is not a type the market takes")


class _ReplyUnpickler(_RequestUnpickler):
    """The C unpickler with the answer allow-list; records the products it builds.

    Products travel anywhere in an answer (a list of them, a snapshot's
    tuples), so a product class resolves to a maker that keeps each product
    it builds in ``built``, for ``_check_product`` once the answer is loaded.
    """

    def find_class(self, module: str, name: str) -> Any:
        cls = _PRODUCTS.get((module, name))
        if cls is None:
            if (module, name) not in REPLY_NAMES:
                raise RefusedPayload(f"{_clean(f'{module}.{name}')} is not a type the market sends")
            return _resolve(module, name)
        built: list[Product] = self.__dict__.setdefault("built", [])

        def make(*fields: Any) -> Product:
            product = cls(*fields)
            built.append(product)
            return product

        return make


def _check_product(product: Product) -> None:
    """A product's state is its fields, each a scalar of its type.

    Raises ``RefusedPayload`` for a tampered state (``BUILD`` wrote it, or
    ``NEWOBJ`` built it without ``__init__``), ``InvalidArgumentError`` for a
    field of another type. A few C calls for a valid one.
    """
    cls = product.__class__
    state = product.__dict__
    names = _NAMES[cls]
    fields = tuple(map(state.get, names))
    if len(state) != len(names) + 1 or state.get("_key") != fields:
        raise RefusedPayload(f"a {cls.__name__} whose state is not its fields")
    if tuple(map(type, fields)) not in _TYPES[cls]:
        for (name, kinds), value in zip(_FIELDS[cls], fields, strict=True):
            if type(value) not in kinds:
                raise InvalidArgumentError(
                    f"{cls.__name__}.{name} must be "
                    f"{'a string' if kinds is _STR else 'a number'}, got {type(value).__name__}"
                )


def _too_deep(value: Any) -> bool:
    """True if ``value`` nests containers deeper than ``MAX_DEPTH`` (no recursion)."""
    level: list[Any] = [value]
    for _ in range(MAX_DEPTH):
        inner: list[Any] = []
        for item in level:
            if type(item) is dict:
                inner += [x for x in item.values() if type(x) in _CONTAINERS]
                inner += [x for x in item if type(x) in _CONTAINERS]
            else:
                inner += [x for x in item if type(x) in _CONTAINERS]
        if not inner:
            return False
        level = inner
    return True


def _check_arguments(values: Iterable[Any]) -> None:
    for value in values:
        kind = type(value)
        if kind in _SCALARS:
            continue
        if kind in _FIELDS:
            _check_product(value)
        elif kind in _CONTAINERS and _too_deep(value):
            raise InvalidArgumentError(f"an argument nested deeper than {MAX_DEPTH} levels")


def load_request(data: bytes | bytearray) -> tuple[Any, Any, Any, Any]:
    """A request ``(ident, method, args, kwds)``, read with the request allow-list.

    The market's operations take scalars and products: only a request's
    arguments are products the market uses, so only they are checked (a
    product inside a container argument is refused by the market as the
    container is). Raises ``RefusedPayload`` (hang up),
    ``InvalidArgumentError`` (answer it), or what a malformed pickle or
    shape raises (``UnpicklingError``, ``ValueError``...: answered as the
    stock server does).
    """
    if b"\x93" not in data and _LITERAL_ONLY.fullmatch(data):  # no STACK_GLOBAL: try it
        ident, method, args, kwds = pickle.loads(data)
    else:
        ident, method, args, kwds = _RequestUnpickler(io.BytesIO(data)).load()
    if type(args) in _CONTAINERS:
        _check_arguments(args)
    if type(kwds) is dict and kwds:
        _check_arguments(kwds.values())
    return ident, method, args, kwds


def refused(refusal: RefusedPayload) -> InvalidArgumentError:
    """What the sender of a refused request is told."""
    return InvalidArgumentError(
        f"request refused: {refusal}; only the market's own types cross the wire "
        "(the connection is closed)"
    )


def load_reply(data: bytes | bytearray | memoryview) -> Any:
    """An answer, read with the answer allow-list.

    Raises ``UnsafeReplyError`` for anything off the list or a tampered
    product (the whole answer was read: the connection stays in step).
    """
    if _LITERAL_ONLY.fullmatch(data):  # (``in`` would iterate a memoryview)
        return pickle.loads(data)
    unpickler = _ReplyUnpickler(io.BytesIO(data))
    try:
        answer = unpickler.load()
        for product in unpickler.__dict__.get("built", ()):
            _check_product(product)
    except (RefusedPayload, InvalidArgumentError) as error:
        raise UnsafeReplyError(
            f"refused an answer of the server: {error}; only the market's own types cross the wire"
        ) from None
    return answer
