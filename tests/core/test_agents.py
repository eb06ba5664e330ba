"""The agent loops ``produce`` and ``consume``, in threads, on a real Marketplace.

Every thread is a daemon joined with a timeout, so a hang fails a test instead
of stalling the run. A run ends like the runner's: once every consumer is done,
``stop`` is set and the market closed; a producer blocked in ``publish`` then
gets ``MarketClosedError``, which the thread wrapper takes as a normal end.

The longer runs (course cases 01-04, the example configs) start together in
the background when the first of their tests needs them, so the module costs
about as long as the slowest of them (course case 03, some 8 s of make times).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mpmarket.core import agents as agents
from mpmarket.core.agents import MAX_CATCH_UP_S, consume, make_due, produce
from mpmarket.core.books import MarketBooks
from mpmarket.core.generate import generate
from mpmarket.core.load import load_workload
from mpmarket.core.market import Marketplace
from mpmarket.core.workload import (
    ConsumerSpec,
    Op,
    ProducerSpec,
    ProductionStep,
    Workload,
    expected_purchases,
    purchase_line,
)
from mpmarket.errors import MarketClosedError
from mpmarket.products import Coffee, Product, Tea

CONFORMANCE = Path(__file__).resolve().parents[3] / "shared" / "conformance"
CONFIGS = Path(__file__).resolve().parents[2] / "configs"

COURSE_CASES = ("01", "02", "03", "04")
CONFIG_NAMES = ("tea-and-coffee.toml", "busy-market.toml", "slow-producer.toml")

RUN_TIMEOUT_S = 40.0  # a long run's consumers must be done by then (course 03 takes ~8 s)
SHORT_RUN_S = 10.0  # the same for the small runs, which take well under a second
JOIN_S = 5.0  # bound on joining the threads of a run that is over
PROMPT_S = 1.5  # "promptly": far below the waits a stuck agent would sit in


@pytest.fixture
def short_tries(monkeypatch: pytest.MonkeyPatch) -> float:
    """Tries of 0.1 s, for tests of a stop that nobody follows with close()."""
    monkeypatch.setattr(agents, "WAIT_PER_TRY", 0.1)
    return 0.1


LINDEN = Tea("Linden", 9, "Herbal")
ARABICA = Coffee("Arabica", 3, 5.02, "LIGHT")


# -- running a workload in threads ----------------------------------------------


class Spy:
    """A market seen by one agent: records the agent's first few calls."""

    def __init__(self, market: Marketplace, name: str, run: Run) -> None:
        self._market = market
        self._name = name
        self._run = run

    def __getattr__(self, attribute: str) -> Any:
        method = getattr(self._market, attribute)

        def call(*args: Any, **kwargs: Any) -> Any:
            self._run.event(self._name, attribute)
            return method(*args, **kwargs)

        return call


@dataclass
class Run:
    """What a threaded run of a workload did."""

    delivered: Counter[str] = field(default_factory=Counter)
    orders: Counter[str] = field(default_factory=Counter)
    completed: dict[str, int] = field(default_factory=dict)
    published: dict[str, int] = field(default_factory=dict)
    closed: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    ready: Counter[str] = field(default_factory=Counter)
    first_events: dict[str, list[str]] = field(default_factory=dict)
    stuck: list[str] = field(default_factory=list)
    alive_after_close: list[str] = field(default_factory=list)
    books: MarketBooks | None = None
    elapsed: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def event(self, agent: str, what: str) -> None:
        with self.lock:
            events = self.first_events.setdefault(agent, [])
            if len(events) < 3:
                events.append(what)

    def deliver(self, consumer: str, products: list[Product]) -> None:
        with self.lock:
            self.orders[consumer] += 1
            for product in products:
                self.delivered[purchase_line(consumer, product)] += 1

    def mark_ready(self, agent: str) -> None:
        self.event(agent, "ready")
        with self.lock:
            self.ready[agent] += 1


def run_in_threads(workload: Workload, timeout: float = RUN_TIMEOUT_S) -> Run:
    """One thread per agent on one Marketplace; bounded whatever happens."""
    market = Marketplace(workload.queue_size_per_producer)
    stop = threading.Event()
    run = Run()

    def producer_main(spec: ProducerSpec) -> None:
        try:
            run.published[spec.name] = produce(
                Spy(market, spec.name, run), spec, stop, lambda _ident: run.mark_ready(spec.name)
            )
        except MarketClosedError:
            run.closed.add(spec.name)
        except BaseException as error:
            run.errors.append(f"producer {spec.name}: {error!r}")

    def consumer_main(spec: ConsumerSpec) -> None:
        try:
            run.completed[spec.name] = consume(
                Spy(market, spec.name, run),
                spec,
                run.deliver,
                stop,
                lambda _ident: run.mark_ready(spec.name),
            )
        except BaseException as error:
            run.errors.append(f"consumer {spec.name}: {error!r}")

    producers = [
        threading.Thread(target=producer_main, args=(spec,), name=spec.name, daemon=True)
        for spec in workload.producers
    ]
    consumers = [
        threading.Thread(target=consumer_main, args=(spec,), name=spec.name, daemon=True)
        for spec in workload.consumers
    ]
    started = time.monotonic()
    try:
        for thread in (*producers, *consumers):
            thread.start()
        deadline = started + timeout
        agents = len(producers) + len(consumers)
        while sum(run.ready.values()) < agents and time.monotonic() < deadline:
            time.sleep(0.001)
        for thread in consumers:
            thread.join(max(0.0, deadline - time.monotonic()))
        run.elapsed = time.monotonic() - started
        run.stuck = [thread.name for thread in consumers if thread.is_alive()]
        run.books = market.books()
    finally:
        stop.set()
        market.close()
        deadline = time.monotonic() + JOIN_S
        for thread in (*producers, *consumers):
            thread.join(max(0.0, deadline - time.monotonic()))
        run.alive_after_close = [t.name for t in (*producers, *consumers) if t.is_alive()]
    return run


def check_run(run: Run, workload: Workload) -> None:
    """Everything a correct threaded run of ``workload`` must show."""
    assert run.errors == []
    assert run.stuck == [], f"consumers still shopping after {run.elapsed:.1f} s"
    assert run.alive_after_close == []
    assert run.delivered == expected_purchases(workload)
    consumers = {spec.name: spec for spec in workload.consumers}
    assert run.completed == {name: len(spec.sessions) for name, spec in consumers.items()}
    assert run.orders == Counter(
        {name: len(s.sessions) for name, s in consumers.items() if s.sessions}
    )
    # Each producer either saw stop or was closed out of a wait: never both, never neither.
    producers = {spec.name for spec in workload.producers}
    assert set(run.published) | run.closed == producers
    assert not set(run.published) & run.closed
    # ready() once per agent, right after register_producer / new_cart, before anything else.
    agents = producers | set(consumers)
    assert run.ready == Counter(dict.fromkeys(agents, 1))
    for spec in workload.producers:
        assert run.first_events[spec.name][:2] == ["register_producer", "ready"]
    for spec in workload.consumers:
        assert run.first_events[spec.name][:2] == ["new_cart", "ready"]
    # The market's own books agree.
    assert run.books is not None
    assert run.books.balanced
    assert run.books.ordered == workload.products_to_buy
    assert run.books.orders == workload.sessions
    assert run.books.producers == len(workload.producers)
    assert run.books.carts == len(workload.consumers)


# -- the longer runs, all at once in the background ---------------------------------


def long_run_params() -> list[Any]:
    params = [pytest.param(f"config:{name}", id=name) for name in CONFIG_NAMES]
    for case in COURSE_CASES:
        marks = ()
        if not (CONFORMANCE / f"{case}.in").is_file():
            marks = pytest.mark.skip(reason=f"no course case {CONFORMANCE / case}.in")
        params.append(pytest.param(f"course:{case}", id=f"course-{case}", marks=marks))
    return params


def long_run_workloads() -> dict[str, Workload]:
    workloads = {f"config:{name}": load_workload(CONFIGS / name) for name in CONFIG_NAMES}
    for case in COURSE_CASES:
        path = CONFORMANCE / f"{case}.in"
        if path.is_file():
            workloads[f"course:{case}"] = load_workload(path)
    return workloads


@pytest.fixture(scope="module")
def long_runs() -> Iterator[dict[str, tuple[Workload, Future[Run]]]]:
    workloads = long_run_workloads()
    with ThreadPoolExecutor(max_workers=len(workloads), thread_name_prefix="run") as pool:
        yield {
            key: (workload, pool.submit(run_in_threads, workload))
            for key, workload in workloads.items()
        }


@pytest.mark.parametrize("key", long_run_params())
def test_long_run_delivers_what_the_workload_expects(
    key: str, long_runs: dict[str, tuple[Workload, Future[Run]]]
) -> None:
    workload, future = long_runs[key]
    run = future.result(timeout=RUN_TIMEOUT_S + JOIN_S + 5)
    check_run(run, workload)


# -- generated workloads ---------------------------------------------------------------


@pytest.mark.parametrize(
    "workload",
    [
        *(
            pytest.param(generate(4, 8, sessions=3, seed=seed, queue_size=2), id=f"seed{seed}-q2")
            for seed in range(5)
        ),
        pytest.param(generate(3, 6, sessions=4, seed=11, queue_size=1), id="seed11-q1"),
        pytest.param(
            generate(12, 10, sessions=2, seed=5, queue_size=3), id="seed5-mixed-producers"
        ),
        pytest.param(generate(2, 12, sessions=3, seed=8), id="seed8-more-consumers"),
        pytest.param(
            generate(3, 4, sessions=3, seed=3, queue_size=1, make_time=0, wait_time=0),
            id="seed3-zero-times",
        ),
        pytest.param(generate(3, 0, seed=4), id="no-consumers"),
    ],
)
def test_generated_workload_delivers_what_it_expects(workload: Workload) -> None:
    run = run_in_threads(workload, SHORT_RUN_S)
    check_run(run, workload)
    assert run.elapsed < 10


# -- stopping ------------------------------------------------------------------------


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.005)


@dataclass
class Agent:
    """One agent loop in a daemon thread: its result or its exception."""

    target: Callable[[], Any]
    result: Any = None
    error: BaseException | None = None
    thread: threading.Thread = field(init=False)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._main, daemon=True)
        self.thread.start()

    def _main(self) -> None:
        try:
            self.result = self.target()
        except BaseException as error:
            self.error = error

    def join(self, timeout: float = PROMPT_S) -> float:
        """Join within ``timeout``; return how long it took."""
        started = time.monotonic()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"still running after {timeout} s"
        return time.monotonic() - started


def producer(quantity: int = 1, make_time: float = 0.0, wait: float = 30.0) -> ProducerSpec:
    return ProducerSpec("prod", (ProductionStep(LINDEN, quantity, make_time),), wait)


def test_producer_blocked_in_publish_stops_when_the_market_closes() -> None:
    market = Marketplace(1)
    stop = threading.Event()
    agent = Agent(lambda: produce(market, producer(wait=30.0), stop))
    try:
        wait_until(lambda: market.books().waiting_producers == 1)
    finally:
        stop.set()
        market.close()
    assert agent.join() < PROMPT_S
    assert isinstance(agent.error, MarketClosedError)
    assert market.books().on_sale == 1


def test_producer_blocked_in_publish_stops_on_stop_alone(short_tries: float) -> None:
    market = Marketplace(2)
    stop = threading.Event()
    agent = Agent(lambda: produce(market, producer(wait=0.1), stop))
    try:
        wait_until(lambda: market.books().waiting_producers == 1)
        stop.set()
        agent.join()  # within one republish wait of 0.1 s
    finally:
        stop.set()
        market.close()
    assert agent.error is None
    assert agent.result == 2


def test_producer_stops_during_its_make_time() -> None:
    market = Marketplace(5)
    stop = threading.Event()
    agent = Agent(lambda: produce(market, producer(quantity=3, make_time=30.0), stop))
    try:
        wait_until(lambda: market.books().published == 1)
        stop.set()
        agent.join()
    finally:
        stop.set()
        market.close()
    assert agent.error is None
    assert agent.result == 1


def test_producer_with_nothing_to_make_waits_for_stop() -> None:
    market = Marketplace(5)
    stop = threading.Event()
    ready = threading.Event()
    spec = ProducerSpec("idle", (ProductionStep(LINDEN, 0, 0.0),), 0.0)
    agent = Agent(lambda: produce(market, spec, stop, lambda _ident: ready.set()))
    try:
        assert ready.wait(PROMPT_S)
        time.sleep(0.1)
        assert agent.thread.is_alive()
        assert market.books().published == 0
        stop.set()
        agent.join()
    finally:
        stop.set()
        market.close()
    assert agent.error is None
    assert agent.result == 0


def test_consumer_waiting_for_a_product_stops_on_stop(short_tries: float) -> None:
    market = Marketplace(5)
    stop = threading.Event()
    orders: list[tuple[str, list[Product]]] = []
    producer_id = market.register_producer()
    market.publish(producer_id, ARABICA)
    spec = ConsumerSpec(
        "cons",
        0.1,
        ((Op("add", ARABICA, 1),), (Op("add", LINDEN, 2),), (Op("add", ARABICA, 1),)),
    )
    agent = Agent(lambda: consume(market, spec, lambda *order: orders.append(order), stop))
    try:
        wait_until(lambda: market.books().waiting_consumers == 1)
        market.publish(producer_id, LINDEN)  # one of the two it waits for
        stop.set()
        agent.join()  # within one try
    finally:
        stop.set()
        market.close()
    assert agent.error is None
    assert agent.result == 1  # the first session only
    assert orders == [("cons", [ARABICA])]


def test_consumer_waiting_when_the_market_closes_gets_market_closed_error() -> None:
    market = Marketplace(5)
    stop = threading.Event()
    spec = ConsumerSpec("cons", 30.0, ((Op("add", LINDEN, 1),),))
    agent = Agent(lambda: consume(market, spec, lambda *order: None, stop))
    try:
        wait_until(lambda: market.books().waiting_consumers == 1)
    finally:
        stop.set()
        market.close()
    assert agent.join() < PROMPT_S
    assert isinstance(agent.error, MarketClosedError)


def test_consumer_keeps_what_partial_adds_brought_until_all_came(monkeypatch) -> None:
    try_s = 0.05
    monkeypatch.setattr(agents, "WAIT_PER_TRY", try_s)
    market = Marketplace(5)
    stop = threading.Event()
    orders: list[list[Product]] = []
    producer_id = market.register_producer()
    spec = ConsumerSpec("cons", 0.0, ((Op("add", LINDEN, 3), Op("remove", LINDEN, 1)),))
    agent = Agent(
        lambda: consume(market, spec, lambda _name, products: orders.append(products), stop)
    )
    try:
        for _ in range(3):
            # Spaced by more than a try, so that the consumer comes back with 1, then 2.
            time.sleep(2 * try_s)
            assert market.publish(producer_id, LINDEN)
        agent.join()
    finally:
        stop.set()
        market.close()
    assert agent.error is None
    assert agent.result == 1
    assert orders == [[LINDEN, LINDEN]]
    assert market.books().on_sale == 1  # the removed one


def test_ready_is_called_once_after_registering_even_without_work() -> None:
    workload = Workload(
        producers=(ProducerSpec("idle", (), 0.0),),
        consumers=(ConsumerSpec("browser", 0.0, ((),)), ConsumerSpec("absent", 0.0, ())),
        queue_size_per_producer=1,
    )
    run = run_in_threads(workload, SHORT_RUN_S)
    check_run(run, workload)
    assert run.first_events["browser"] == ["new_cart", "ready", "place_order"]
    assert run.first_events["absent"] == ["new_cart", "ready"]
    assert run.first_events["idle"] == ["register_producer", "ready"]


def test_removes_of_more_than_the_cart_holds_then_more_adds() -> None:
    # A remove puts back only what the cart holds; later adds count from there.
    workload = Workload(
        producers=(
            ProducerSpec("tea", (ProductionStep(LINDEN, 1, 0.002),), 0.01),
            ProducerSpec("coffee", (ProductionStep(ARABICA, 2, 0.002),), 0.01),
        ),
        consumers=(
            ConsumerSpec(
                "cons",
                0.01,
                (
                    (
                        Op("add", LINDEN, 1),
                        Op("remove", LINDEN, 3),
                        Op("add", LINDEN, 2),
                        Op("remove", ARABICA, 1),
                        Op("add", ARABICA, 2),
                    ),
                    (Op("add", ARABICA, 1), Op("remove", ARABICA, 1), Op("remove", ARABICA, 1)),
                ),
            ),
        ),
        queue_size_per_producer=2,
    )
    assert expected_purchases(workload) == Counter(
        {purchase_line("cons", LINDEN): 2, purchase_line("cons", ARABICA): 2}
    )
    run = run_in_threads(workload, SHORT_RUN_S)
    check_run(run, workload)
    assert run.orders == Counter({"cons": 2})


# -- the make schedule: no drift ---------------------------------------------------

MS = 1_000_000  # ns


def test_the_first_make_starts_when_its_publish_returns():
    assert (
        make_due(None, started=100 * MS, ended=101 * MS, queued=False, make_ns=10 * MS) == 111 * MS
    )


def test_a_quick_publish_late_on_schedule_does_not_push_the_next_make_back():
    # Due at 110 ms; the sleep woke 0.3 ms late and the publish took 0.2 ms:
    # the next make still ends 10 ms after 110, not after 110.5.
    due = make_due(
        110 * MS,
        started=110 * MS + 300_000,
        ended=110 * MS + 500_000,
        queued=False,
        make_ns=10 * MS,
    )
    assert due == 120 * MS


def test_units_after_units_keep_the_schedule_of_the_first():
    due = make_due(None, started=0, ended=0, queued=False, make_ns=MS)
    for _ in range(1000):  # each wake 0.1 ms late, each publish 0.05 ms
        woke = due + 100_000
        due = make_due(due, started=woke, ended=woke + 50_000, queued=False, make_ns=MS)
    assert due == 1001 * MS  # a thousand units a second, not 870


def test_a_producer_far_behind_makes_up_only_max_catch_up():
    late = 50 * MS
    due = make_due(
        100 * MS, started=100 * MS + late, ended=100 * MS + late, queued=False, make_ns=10 * MS
    )
    assert due == 100 * MS + late - int(MAX_CATCH_UP_S * 1e9) + 10 * MS


def test_a_publish_that_queued_starts_the_make_when_it_returned():
    due = make_due(100 * MS, started=100 * MS, ended=400 * MS, queued=True, make_ns=10 * MS)
    assert due == 410 * MS


class _NoSleep:
    """A stop signal that never sleeps: records each make wait it is asked for."""

    def __init__(self, waits: int) -> None:
        self.asked: list[float] = []
        self.left = waits

    def is_set(self) -> bool:
        return self.left <= 0

    def wait(self, timeout: float | None = None) -> bool:
        assert timeout is not None
        self.asked.append(timeout)
        self.left -= 1
        return self.left <= 0


def test_a_producer_that_keeps_its_schedule_asks_for_what_is_left_of_it():
    # The waits never sleep, so the producer runs ahead of its schedule: the
    # k-th wait asks for the rest of it, k make times of 1 s (less the few
    # microseconds of the publishes: half a second of slack is no timing).
    stop = _NoSleep(5)
    produce(Marketplace(100), producer(quantity=5, make_time=1.0), stop)
    assert stop.asked == pytest.approx([1.0, 2.0, 3.0, 4.0, 5.0], abs=0.5)


def test_the_course_s_producer_sleeps_the_make_time_after_each_publish():
    stop = _NoSleep(5)
    produce(Marketplace(100), producer(quantity=5, make_time=1.0), stop, keep_schedule=False)
    assert stop.asked == [1.0] * 5  # the classic reference: no schedule, the sleep as given
