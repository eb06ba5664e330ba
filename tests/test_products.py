"""Products: exact reprs, frozen, hashable, compared by value and by class."""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from mpmarket.errors import WorkloadError
from mpmarket.products import PRODUCT_TYPES, Coffee, Product, Tea, product_from_spec

LINDEN = Tea(name="Linden", price=9, type="Herbal")
INDONEZIA = Coffee(name="Indonezia", price=1, acidity=5.05, roast_level="MEDIUM")


# -- reprs (part of the output format) ----------------------------------------


def test_tea_repr_is_exact():
    assert repr(LINDEN) == "Tea(name='Linden', price=9, type='Herbal')"


def test_coffee_repr_is_exact():
    assert (
        repr(INDONEZIA) == "Coffee(name='Indonezia', price=1, acidity=5.05, roast_level='MEDIUM')"
    )


def test_product_repr_is_exact():
    assert repr(Product("Cup", 3)) == "Product(name='Cup', price=3)"


def test_positional_field_order_is_fixed():
    assert Tea("Linden", 9, "Herbal") == LINDEN
    assert Coffee("Indonezia", 1, 5.05, "MEDIUM") == INDONEZIA


# -- frozen, hashable, equality by value --------------------------------------


@pytest.mark.parametrize(
    ("product", "field"),
    [(LINDEN, "name"), (LINDEN, "type"), (INDONEZIA, "price"), (INDONEZIA, "roast_level")],
)
def test_products_are_frozen(product, field):
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(product, field, "changed")
    with pytest.raises(dataclasses.FrozenInstanceError):
        delattr(product, field)


def test_products_are_hashable_and_equal_by_value():
    twin = Tea("Linden", 9, "Herbal")
    assert twin is not LINDEN
    assert twin == LINDEN
    assert hash(twin) == hash(LINDEN)
    assert len({LINDEN, twin, Coffee("Indonezia", 1, 5.05, "MEDIUM"), INDONEZIA}) == 2
    assert {LINDEN: 1}[twin] == 1


def test_any_differing_field_makes_products_differ():
    assert Tea("Linden", 9, "Black") != LINDEN
    assert Tea("Linden", 10, "Herbal") != LINDEN
    assert Tea("Lime", 9, "Herbal") != LINDEN
    assert Coffee("Indonezia", 1, 5.05, "DARK") != INDONEZIA
    assert Coffee("Indonezia", 1, 5.06, "MEDIUM") != INDONEZIA


def test_a_tea_is_not_a_product_with_the_same_name_and_price():
    tea, plain = Tea("Linden", 9, "Herbal"), Product("Linden", 9)
    assert tea != plain
    assert plain != tea
    assert len({plain, tea}) == 2
    assert isinstance(tea, Product)


def test_tea_and_coffee_never_equal():
    assert Tea("X", 1, "Black") != Coffee("X", 1, 1, "Black")


def test_products_pickle_by_value():
    for product in (LINDEN, INDONEZIA, Product("Cup", 2.5)):
        clone = pickle.loads(pickle.dumps(product))
        assert clone == product
        assert type(clone) is type(product)
        assert hash(clone) == hash(product)


# -- product_from_spec --------------------------------------------------------


def test_product_types_registry():
    assert {"Product": Product, "Tea": Tea, "Coffee": Coffee} == PRODUCT_TYPES


def test_from_spec_builds_each_kind():
    assert (
        product_from_spec(
            {"name": "Linden", "price": 9, "type": "Herbal"}, kind="Tea", source="w.json", where="x"
        )
        == LINDEN
    )
    coffee = product_from_spec(
        {"name": "Indonezia", "price": 1, "acidity": 5.05, "roast_level": "MEDIUM"},
        kind="Coffee",
        source="w.json",
        where="x",
    )
    assert coffee == INDONEZIA
    assert type(coffee) is Coffee
    plain = product_from_spec({"name": "Cup", "price": 2.5}, kind="Product", source="s", where="w")
    assert plain == Product("Cup", 2.5)
    assert type(plain) is Product


def test_from_spec_accepts_a_zero_price():
    assert product_from_spec({"name": "Free", "price": 0}, kind="Product", source="s", where="w")


def _spec_error(spec, kind="Tea", source="shop.json", where="products.linden"):
    with pytest.raises(WorkloadError) as raised:
        product_from_spec(spec, kind=kind, source=source, where=where)
    return raised.value


def test_from_spec_unknown_type_names_file_and_field():
    error = _spec_error({"name": "Linden", "price": 9}, kind="Juice")
    text = str(error)
    assert "shop.json" in text
    assert "products.linden" in text
    assert "'Juice'" in text
    assert error.source == "shop.json"
    assert error.field == "products.linden.kind"


def test_from_spec_missing_field_names_file_and_field():
    error = _spec_error({"name": "Linden", "price": 9})
    text = str(error)
    assert "shop.json" in text
    assert "products.linden.type" in text
    assert error.field == "products.linden.type"


@pytest.mark.parametrize(
    ("spec", "field", "got"),
    [
        ({"name": "Linden", "price": "9", "type": "Herbal"}, "price", "'9'"),
        ({"name": 7, "price": 9, "type": "Herbal"}, "name", "7"),
        ({"name": "Linden", "price": 9, "type": None}, "type", "None"),
        ({"name": "Linden", "price": True, "type": "Herbal"}, "price", "True"),
    ],
)
def test_from_spec_wrong_field_type_names_file_and_field(spec, field, got):
    error = _spec_error(spec)
    text = str(error)
    assert "shop.json" in text
    assert f"products.linden.{field}" in text
    assert got in text
    assert error.field == f"products.linden.{field}"


def test_from_spec_wrong_coffee_field_type():
    error = _spec_error(
        {"name": "Indonezia", "price": 1, "acidity": "high", "roast_level": "MEDIUM"},
        kind="Coffee",
        source="c.toml",
        where="producers[0].products[1]",
    )
    assert "c.toml" in str(error)
    assert "producers[0].products[1].acidity" in str(error)


@pytest.mark.parametrize("price", [-1, -0.5])
def test_from_spec_negative_price_names_file_and_field(price):
    error = _spec_error({"name": "Linden", "price": price, "type": "Herbal"})
    text = str(error)
    assert "shop.json" in text
    assert "products.linden.price" in text
    assert repr(price) in text


def test_from_spec_non_table_names_file_and_field():
    error = _spec_error(["Linden", 9, "Herbal"])
    assert "shop.json" in str(error)
    assert "products.linden" in str(error)


def test_workload_error_pickles():
    error = _spec_error({"name": "Linden", "price": -1, "type": "Herbal"})
    clone = pickle.loads(pickle.dumps(error))
    assert type(clone) is WorkloadError
    assert clone.args == error.args
    assert str(clone) == str(error)
