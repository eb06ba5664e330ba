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
list without recursion; its ``repr`` or ``hash`` would not), and so is one of
more than ``MAX_ITEMS`` items and characters, a shared one counted per use (a
pickle shares a pair 40 deep in 70 bytes: 2**40 leaves to hash or print); an
``ident`` or ``method`` that is no scalar is checked the same, before it is
hashed. The unpickler itself hashes dict keys and set items as it reads,
so every message no memo holds is first read opcode by opcode
(``mpmarket.net.pickle_scan``): one that would hash anything but a scalar is
refused unread (``RefusedPayload``; a client's ``UnsafeReplyError``).

Two things keep the cost at or below plain ``pickle.loads`` (docs/performance.md,
"The allow-list"):

- **a memo of what was read** (``ReadMemo``), by the bytes read. Agents send
  the same few requests again and again (a producer publishes the same
  products, a consumer adds them to the same cart) and get the same few
  answers (``True``, a count): a lookup of the bytes costs less than reading
  them. Only what was read whole and checked is kept, and only values no one
  can change (scalars, products, and an order's list, which is copied on
  each hit); a failure is never kept, so a refused pickle is refused again.
  A product is shared only if equal fields are the same fields (no float
  zero, ``0.0 == -0.0``; no NaN) and small (``_shareable``).
- **a fast path** (``_LITERAL_ONLY``): a pickle proved to hold no opcode that
  reaches a callable builds literals only, and ``pickle.loads`` reads it.

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
import sys
from collections.abc import Iterable
from typing import Any, ClassVar

from mpmarket import errors
from mpmarket.core.books import MARKET_OPERATIONS
from mpmarket.errors import InvalidArgumentError, UnsafeReplyError
from mpmarket.net.pickle_scan import hashes_a_container
from mpmarket.net.read_memo import (
    MEMO_MESSAGE_BYTES,
    REPLY_MEMO_SIZE,
    REQUEST_MEMO_SIZE,
    ReadMemo,
)
from mpmarket.products import PRODUCT_TYPES, Product, ProductStateError

__all__ = [
    "MAX_DEPTH",
    "MAX_ITEMS",
    "MEMO_MESSAGE_BYTES",
    "REPLY_MEMO_SIZE",
    "REPLY_NAMES",
    "REQUEST_MEMO_SIZE",
    "REQUEST_NAMES",
    "ReadMemo",
    "RefusedPayload",
    "load_reply",
    "load_request",
    "refused",
]

# How deep a request's container argument may nest. The market's operations
# take scalars and products only; the stock proxy's tuples and dicts add two.
MAX_DEPTH = 32
# How many items and characters a request's container argument may hold, a
# shared item counted once per place it is used (``_oversized``).
MAX_ITEMS = 100_000

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
# Values a reader may share between the calls that sent the same bytes.
_IMMUTABLE = _SCALARS | frozenset(PRODUCT_TYPES.values())
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

    A product of scalar fields of its types is taken from ``_products_read``
    when one was made before from the same fields: it was made by its class,
    and no pickle can write its state (``Product.__setstate__`` refuses
    ``BUILD``), so there is nothing to check, and an order of known products
    builds none. The others are made and kept in ``built``.
    """

    def find_class(self, module: str, name: str) -> Any:
        cls = _PRODUCTS.get((module, name))
        if cls is None:
            if (module, name) not in REPLY_NAMES:
                raise RefusedPayload(f"{_clean(f'{module}.{name}')} is not a type the market sends")
            return _resolve(module, name)
        built: list[Product] = self.__dict__.setdefault("built", [])
        valid = _TYPES[cls]

        def make(*fields: Any) -> Product:
            types = tuple(map(type, fields))
            if types not in valid:  # a field of another type: refused once loaded
                product = cls(*fields)
                built.append(product)
                return product
            key = (cls, types, fields)  # hashable: scalars (1 and 1.0 apart by their types)
            known = _products_read.get(key)
            if known is None:
                known = cls(*fields)
                if _shareable(fields):
                    _products_read.keep(key, known)
            return known

        return make


def _shareable(fields: tuple[Any, ...]) -> bool:
    """Whether a product of these (scalar) fields may be kept in ``_products_read``.

    Its key must match only fields of the same value: ``0.0 == -0.0`` (one
    would be answered for the other) and a NaN matches only itself (kept,
    never found again). Small: the memo keeps at most ``REPLY_MEMO_SIZE`` of
    them, so ``MEMO_MESSAGE_BYTES`` of fields each (a name of a megabyte read
    once is not kept).
    """
    for value in fields:
        if type(value) is float and (value == 0.0 or value != value):
            return False
    return sum(map(sys.getsizeof, fields)) <= MEMO_MESSAGE_BYTES


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


def _oversized(value: Any) -> str | None:
    """Why container ``value`` is too large to pass on, or None (no recursion).

    Too deep: nested deeper than ``MAX_DEPTH``. Too large: more than
    ``MAX_ITEMS`` items and characters, counted as the market would use
    them: a container a pickle shares (``DUP``, ``GET``) counts once per
    place, so a 70-byte pickle of ``(t, t)`` pairs 40 deep is a trillion
    items (its hash, its ``repr`` in an error message would never end), and
    it is refused after reading at most ``MAX_ITEMS`` of them. The products
    in it are checked as an argument's are.
    """
    level: list[Any] = [value]
    total = 0
    for _ in range(MAX_DEPTH):
        total += sum(map(len, level))  # before reading them
        if total > MAX_ITEMS:
            break
        inner: list[Any] = []
        for container in level:
            items = (
                itertools.chain(container, container.values())
                if type(container) is dict
                else container
            )
            for item in items:
                kind = type(item)
                if kind in _CONTAINERS:
                    inner.append(item)
                elif kind is str or kind is bytes:
                    total += len(item)
                elif kind in _FIELDS:
                    _check_product(item)
                    total += sum(map(sys.getsizeof, item.__dict__["_key"]))
        if total > MAX_ITEMS:
            break
        if not inner:
            return None
        level = inner
    else:
        return f"an argument nested deeper than {MAX_DEPTH} levels"
    return f"an argument of more than {MAX_ITEMS:,} items and characters"


def _check_arguments(values: Iterable[Any]) -> None:
    for value in values:
        kind = type(value)
        if kind in _SCALARS:
            continue
        if kind in _FIELDS:
            _check_product(value)
        elif kind in _CONTAINERS:
            reason = _oversized(value)
            if reason is not None:
                raise InvalidArgumentError(reason)


_Request = tuple[Any, Any, Any, Any]
_requests_read: ReadMemo[bytes, _Request] = ReadMemo(REQUEST_MEMO_SIZE)
# An answer's kind, its value (a list's items as a tuple), whether it was a list.
_replies_read: ReadMemo[bytes, tuple[str, Any, bool]] = ReadMemo(REPLY_MEMO_SIZE)
_products_read: ReadMemo[tuple[type[Product], tuple[type, ...], tuple[Any, ...]], Product] = (
    ReadMemo(REPLY_MEMO_SIZE)
)


def _all_immutable(values: Iterable[Any]) -> bool:
    return all(type(value) in _IMMUTABLE for value in values)


def load_request(data: bytes | bytearray) -> _Request:
    """A request ``(ident, method, args, kwds)``, read with the request allow-list.

    The market's operations take scalars and products: only a request's
    arguments are products the market uses, so only they are checked (a
    product inside a container argument is refused by the market as the
    container is). Raises ``RefusedPayload`` (hang up),
    ``InvalidArgumentError`` (answer it), or what a malformed pickle or
    shape raises (``UnpicklingError``, ``ValueError``...: answered as the
    stock server does).

    A request read before is looked up (``ReadMemo``): its arguments are
    scalars and products, shared by the calls that sent the same bytes, and
    its ``kwds`` must be read, never changed (``**kwds`` copies it).
    """
    key = bytes(data)
    request = _requests_read.get(key)
    if request is not None:
        return request
    if hashes_a_container(key):
        raise RefusedPayload("a dict key or a set item that is not a scalar")
    if b"\x93" not in data and _LITERAL_ONLY.fullmatch(data):  # no STACK_GLOBAL: try it
        ident, method, args, kwds = pickle.loads(data)
    else:
        try:
            ident, method, args, kwds = _RequestUnpickler(io.BytesIO(data)).load()
        except ProductStateError as error:  # BUILD on a product
            raise RefusedPayload(str(error)) from None
    if type(args) in _CONTAINERS:
        _check_arguments(args)
    if type(kwds) is dict and kwds:
        _check_arguments(kwds.values())
    if type(ident) not in _SCALARS or type(method) is not str:  # hashed next: bounded
        _check_arguments((ident, method))
    request = ident, method, args, kwds
    if (
        type(ident) in _SCALARS
        and type(method) is str
        and type(args) is tuple
        and type(kwds) is dict
        and _all_immutable(args)
        and _all_immutable(kwds.values())
        and len(key) <= MEMO_MESSAGE_BYTES
    ):
        _requests_read.keep(key, request)
    return request


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

    An answer read before is looked up (``ReadMemo``): ``(kind, value)`` of a
    scalar or a product, or of a list of them, which each hit gets a copy of.
    """
    key = bytes(data)
    known = _replies_read.get(key)
    if known is not None:
        kind, value, is_list = known
        return (kind, list(value)) if is_list else (kind, value)
    if hashes_a_container(key):
        raise UnsafeReplyError(
            "refused an answer of the server: a dict key or a set item that is not a "
            "scalar; only the market's own types cross the wire"
        )
    if _LITERAL_ONLY.fullmatch(key):
        answer = pickle.loads(key)
    else:
        unpickler = _ReplyUnpickler(io.BytesIO(key))
        try:
            answer = unpickler.load()
            for product in unpickler.__dict__.get("built", ()):
                _check_product(product)
        except (RefusedPayload, ProductStateError, InvalidArgumentError) as error:
            raise UnsafeReplyError(
                f"refused an answer of the server: {error}; "
                "only the market's own types cross the wire"
            ) from None
    if (
        type(answer) is tuple
        and len(answer) == 2
        and answer[0] == "#RETURN"
        and len(key) <= MEMO_MESSAGE_BYTES
    ):
        value = answer[1]
        if type(value) in _IMMUTABLE:
            _replies_read.keep(key, (answer[0], value, False))
        elif type(value) is list and _all_immutable(value):
            _replies_read.keep(key, (answer[0], tuple(value), True))
    return answer
