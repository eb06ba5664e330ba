"""``waits_round``: how late a timed-out wait returns, against ``time.sleep``.

On an empty mpmarket market, this process's proxy calls
``add_to_cart(cart, product, timeout=t)``, which waits ``t`` in the market
and returns False; right after each, ``time.sleep(t)``, so both are measured
under the same load. The overshoot is the call's wall time minus ``t``: it
holds the request's way to the server, the server's wake-up at the deadline
and the answer's way back (two wake-ups of an idle process, as the wake floor
of ``bench latency`` measures them), where ``time.sleep`` has only its own
wake-up.

Figures per timeout (case ``"timed-out wait, N ms"`` of ``bench latency``,
named as the latency cases' so that the table stays narrow): ``samples``,
``timed_out`` (calls that returned False, as they all should), ``p50_us``,
``p90_us``, ``p99_us`` (of the overshoot), ``sleep_p50_us``,
``sleep_p90_us`` (of the sleep's), ``p90_minus_sleep_us``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from multiprocessing.context import BaseContext

from mpmarket.bench.classic import MPMARKET, BenchServer, open_market
from mpmarket.bench.results import percentile
from mpmarket.products import Product

__all__ = ["WAITS_SAMPLES", "WAITS_TIMEOUTS", "WAITS_WARMUP", "waits_name", "waits_round"]

# The timeouts measured (s), the most samples of each a round (fewer when
# ``bench latency --samples`` is smaller), and calls made before them.
WAITS_TIMEOUTS = (0.001, 0.005)
WAITS_SAMPLES = 300
WAITS_WARMUP = 10

# A kind never published: every add waits its whole timeout.
_NEVER = Product(name="never-published", price=0)


def waits_name(timeout: float) -> str:
    """The case of one timeout: ``"timed-out wait, 1 ms"``."""
    return f"timed-out wait, {timeout * 1000:g} ms"


def waits_round(
    timeouts: Sequence[float], samples: int, ctx: BaseContext
) -> dict[float, dict[str, float | None]]:
    """The figures of each timeout: ``samples`` timed-out adds and sleeps, one after the other."""
    measured: dict[float, dict[str, float | None]] = {}
    with BenchServer(MPMARKET, ctx) as server:
        market = open_market(MPMARKET, server.address, server.authkey)
        try:
            cart = market.new_cart()
            for timeout in timeouts:
                for _ in range(WAITS_WARMUP):
                    market.add_to_cart(cart, _NEVER, timeout=timeout)
                over: list[float] = []
                slept: list[float] = []
                timed_out = 0
                for _ in range(samples):
                    start = time.perf_counter()
                    added = market.add_to_cart(cart, _NEVER, timeout=timeout)
                    over.append((time.perf_counter() - start - timeout) * 1e6)
                    timed_out += added is False
                    start = time.perf_counter()
                    time.sleep(timeout)
                    slept.append((time.perf_counter() - start - timeout) * 1e6)
                measured[timeout] = _figures(over, slept, timed_out)
        finally:
            market.disconnect()
    return measured


def _figures(over: list[float], slept: list[float], timed_out: int) -> dict[str, float | None]:
    p90, sleep_p90 = percentile(over, 90), percentile(slept, 90)
    return {
        "samples": len(over),
        "timed_out": timed_out,
        "p50_us": percentile(over, 50),
        "p90_us": p90,
        "p99_us": percentile(over, 99),
        "sleep_p50_us": percentile(slept, 50),
        "sleep_p90_us": sleep_p90,
        "p90_minus_sleep_us": p90 - sleep_p90,
    }
