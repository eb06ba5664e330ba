"""The ``market`` fixture, used from a throwaway test file in a pytest subprocess."""

from __future__ import annotations

pytest_plugins = ["pytester"]

THROWAWAY_TEST = """
import multiprocessing

import pytest

from mpmarket.products import Tea
from mpmarket.net.client import connect

LINDEN = Tea("Linden", 9, "Herbal")


def produce_two(address, authkey):
    market = connect(address, authkey)
    producer = market.register_producer()
    assert market.publish(producer, LINDEN) and market.publish(producer, LINDEN)


def test_a_consumer_against_a_real_server(market):
    cart = market.proxy.new_cart()
    process = multiprocessing.get_context("spawn").Process(
        target=produce_two, args=(market.address, market.authkey)
    )
    process.start()
    process.join(30)
    assert process.exitcode == 0
    assert market.proxy.add_many(cart, LINDEN, 2, 10.0) == 2
    assert market.proxy.place_order(cart) == [LINDEN, LINDEN]
    assert market.address[0] == "127.0.0.1"
    assert repr(market.authkey) not in repr(market)


class TestACapOfOne:
    @pytest.fixture
    def market_queue_size(self):
        return 1

    def test_the_cap_can_be_set(self, market):
        producer = market.proxy.register_producer()
        assert market.proxy.publish(producer, LINDEN)
        assert not market.proxy.publish(producer, LINDEN)
"""


def test_the_market_fixture_from_an_installed_mpmarket(pytester):
    pytester.makepyfile(test_uses_market=THROWAWAY_TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=120)
    result.assert_outcomes(passed=2)
