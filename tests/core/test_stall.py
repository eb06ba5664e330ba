"""A stall report built from a live market reads like simulate's deadlock report."""

from __future__ import annotations

import contextlib
import threading
import time

from mpmarket.core.market import Marketplace
from mpmarket.core.simulate import simulate
from mpmarket.core.stall import diagnose
from mpmarket.core.workload import ConsumerSpec, Op, ProducerSpec, ProductionStep, Workload
from mpmarket.errors import MarketClosedError
from mpmarket.products import Coffee, Tea

LINDEN = Tea("Linden", 9, "Herbal")
ARABICA = Coffee("Arabica", 3, 5.02, "LIGHT")

# prod1 makes two Arabica, then Linden; its two slots fill with Arabica that
# nobody wants, so cons1 waits for Linden forever.
STUCK = Workload(
    producers=(
        ProducerSpec(
            "prod1",
            (ProductionStep(ARABICA, 2, 0.0), ProductionStep(LINDEN, 1, 0.0)),
            0.1,
        ),
    ),
    consumers=(ConsumerSpec("cons1", 0.1, ((Op("add", LINDEN, 1),),)),),
    queue_size_per_producer=2,
)


def test_a_live_stall_names_the_consumer_the_product_and_what_fills_the_slots():
    market = Marketplace(STUCK.queue_size_per_producer)
    producer = market.register_producer()
    cart = market.new_cart()
    assert market.publish(producer, ARABICA) and market.publish(producer, ARABICA)

    def blocked(call) -> None:
        with contextlib.suppress(MarketClosedError):
            call()

    threads = [
        threading.Thread(target=blocked, args=(lambda: market.add_many(cart, LINDEN, 1, 30),)),
        threading.Thread(target=blocked, args=(lambda: market.publish(producer, LINDEN, 30),)),
    ]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            books = market.books()
            if books.waiting_consumers and books.waiting_producers:
                break
            time.sleep(0.001)
        report = diagnose(
            market.waits(),
            STUCK,
            {cart: "cons1"},
            {producer: "prod1"},
            {"cons1": [Op("add", LINDEN, 1)]},
            stalled_s=5.0,
        )
    finally:
        market.close()
        for thread in threads:
            thread.join(timeout=10)
    lines = report.explain()
    assert f"cons1 waits for {LINDEN!r} made by prod1" in lines
    assert f"prod1 has 2 of 2 slots taken by {ARABICA!r} that no remaining consumer wants" in lines
    # The simulator predicts the same deadlock, in the same words.
    predicted = simulate(STUCK).deadlock
    assert predicted is not None
    assert predicted.explain()[1:] == lines[1:]
