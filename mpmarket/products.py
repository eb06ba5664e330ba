"""Products sold on the market: frozen, hashable dataclasses.

Their reprs are part of the output format (``cons1 bought Tea(name='Linden',
price=9, type='Herbal')``), so the field order of each class is fixed.
Products are compared by value: the market sells "the first product on sale
that equals the one asked for", and a frozen dataclass gives that equality and
a hash for free.
"""

from __future__ import annotations

import math
import pickle
from dataclasses import dataclass, fields
from typing import Any

from mpmarket.errors import WorkloadError

__all__ = [
    "PRODUCT_TYPES",
    "Coffee",
    "Product",
    "ProductStateError",
    "Tea",
    "product_from_spec",
]


class ProductStateError(pickle.UnpicklingError):
    """A pickle tried to give a product a state: it is made from its fields only."""


@dataclass(frozen=True)
class Product:
    """Anything with a name and a price.

    Products are dictionary keys on every market operation, and cross a
    process boundary in every call, so equality and hashing use a tuple of the
    fields computed once, and a product pickles as its class and fields (the
    cached hash never travels: string hashes differ between processes).
    """

    name: str
    price: int | float

    def __post_init__(self) -> None:
        key = tuple(self.__dict__.values())  # the fields, in order: nothing else yet
        object.__setattr__(self, "_key", key)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        cached: int | None = self.__dict__.get("_hash")
        if cached is None:  # computed on first use: a field may be unhashable
            cached = hash(self._fields())
            object.__setattr__(self, "_hash", cached)
        return cached

    def __reduce__(self) -> tuple[type[Product], tuple[object, ...]]:
        return (self.__class__, self._fields())

    def __setstate__(self, state: object) -> None:
        """Refused: a product is made from its fields, never given a state.

        A pickle's ``BUILD`` would otherwise write the ``__dict__`` of a made
        product, frozen or not (a forged hash, a field swapped after
        ``__post_init__``); products read from the wire are shared
        (``mpmarket.net.safe_pickle``), so none may be written. Nothing
        mpmarket pickles has a state: ``__reduce__`` gives the fields.
        """
        raise ProductStateError(
            f"a {type(self).__name__} is made from its fields, never given a state"
        )

    def _fields(self) -> tuple[object, ...]:
        """The fields as a tuple; also for one built without __init__ (a raw pickle)."""
        key: tuple[object, ...] | None = self.__dict__.get("_key")
        if key is None:
            key = tuple(getattr(self, field.name) for field in fields(self))
        return key


@dataclass(frozen=True)
class Tea(Product):
    """A tea; ``type`` is its variety (Herbal, Black, Green...)."""

    type: str

    __eq__ = Product.__eq__  # keep the cached ones: dataclass would write its own
    __hash__ = Product.__hash__


@dataclass(frozen=True)
class Coffee(Product):
    """A coffee with its acidity and roast level (LIGHT, MEDIUM, DARK...)."""

    acidity: int | float
    roast_level: str

    __eq__ = Product.__eq__
    __hash__ = Product.__hash__


PRODUCT_TYPES: dict[str, type[Product]] = {
    "Product": Product,
    "Tea": Tea,
    "Coffee": Coffee,
}

# What each field must hold, for the one-line errors of a bad workload.
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "price": (int, float),
    "type": (str,),
    "acidity": (int, float),
    "roast_level": (str,),
}


def product_from_spec(
    spec: Any, *, kind: str, source: str, where: str, kind_key: str = "kind"
) -> Product:
    """Build a product from ``{"name": ..., "price": ..., ...}`` and a class name.

    ``source`` (the file), ``where`` (the field path) and ``kind_key`` (the key
    that named the class) only serve the error message: a bad spec raises
    ``WorkloadError`` naming them. Unknown fields are refused, as a typo would
    otherwise pass silently.
    """
    cls = PRODUCT_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise WorkloadError(
            source,
            f"{where}.{kind_key}",
            f"a product type among {', '.join(PRODUCT_TYPES)}",
            repr(kind),
        )
    if not isinstance(spec, dict):
        raise WorkloadError(source, where, "a table of product fields", type(spec).__name__)
    names = [field.name for field in fields(cls)]
    for key in spec:
        if key not in names:
            raise WorkloadError(
                source, f"{where}.{key}", f"only the fields of {kind}: {', '.join(names)}"
            )
    values: dict[str, Any] = {}
    for name in names:
        if name not in spec:
            raise WorkloadError(source, f"{where}.{name}", f"a value (required by {kind})")
        value = spec[name]
        if _FIELD_TYPES[name] == (str,):
            if not isinstance(value, str):
                raise WorkloadError(source, f"{where}.{name}", "a string", repr(value))
        elif isinstance(value, bool) or not isinstance(value, int | float):
            raise WorkloadError(source, f"{where}.{name}", "a number", repr(value))
        elif not math.isfinite(value):
            raise WorkloadError(source, f"{where}.{name}", "a finite number", repr(value))
        if name == "price" and value < 0:
            raise WorkloadError(source, f"{where}.price", "a non-negative number", repr(value))
        values[name] = value
    return cls(**values)
