"""Several machines on one: ``serve``, ``run --connect`` and ``status`` as real process trees.

Everything listens and connects on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from multiprocessing import managers

import psutil
import pytest

from mpmarket import __version__ as mpmarket_version
from mpmarket.core.generate import generate
from mpmarket.core.load import load_workload
from mpmarket.core.workload import expected_purchases
from mpmarket.errors import InvalidArgumentError, MarketUnavailableError, VersionMismatchError
from mpmarket.net import client as client_module
from mpmarket.net.client import connect, open_connection
from mpmarket.net.server import new_authkey, start_server
from mpmarket.net.wire import PROTOCOL_VERSION, SESSION_IDENT, is_loopback
from mpmarket.products import Coffee, Tea
from mpmarket.run.plan import pick_agents
from tests.net.remote_helpers import (
    clean_env,
    free_port,
    mpmarket,
    run_command,
    wait_for_start_line,
)

pytestmark = pytest.mark.timeout(120)

LINDEN = Tea("Linden", 9, "Herbal")
ARABICA = Coffee("Arabica", 3, 5.02, "LIGHT")

KEY = "a-test-key-0123456789abcdef"

# Consumers that wait for producers started later; a few seconds of work in all.
WORKLOAD = """
[market]
queue_size_per_producer = 3

[products]
linden = { kind = "Tea", name = "Linden", price = 9, type = "Herbal" }
arabica = { kind = "Coffee", name = "Arabica", price = 3, acidity = 5.02, roast_level = "LIGHT" }

[[producers]]
name = "tea-maker"
republish_wait_time = 0.01
make = [{ product = "linden", quantity = 2, time = 0.002 }]

[[producers]]
name = "roaster"
republish_wait_time = 0.01
make = [{ product = "arabica", quantity = 1, time = 0.003 }, { product = "linden", time = 0.001 }]

[[consumers]]
name = "alice"
retry_wait_time = 0.01
sessions = [
  [{ add = "linden", quantity = 3 }, { add = "arabica" }, { remove = "linden" }],
  [{ add = "arabica", quantity = 4 }],
]

[[consumers]]
name = "bob"
retry_wait_time = 0.01
sessions = [[{ add = "linden", quantity = 2 }, { remove = "linden", quantity = 5 }], [{ add = "linden" }]]

[[consumers]]
name = "carol"
retry_wait_time = 0.01
sessions = [[{ add = "arabica", quantity = 2 }, { add = "linden", quantity = 2 }]]
"""


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "market.toml"
    path.write_text(WORKLOAD)
    return path


@pytest.fixture
def key_file(tmp_path):
    path = tmp_path / "authkey"
    path.write_text(KEY + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def env(tmp_path):
    return clean_env(tmp_path)


def _status(address, key_file, env, *extra):
    result = run_command(
        "status", "--connect", address, "--authkey-file", key_file, "--json", *extra, env=env
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _wait_for_status(address, key_file, env, predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while True:
        status = _status(address, key_file, env)
        if predicate(status) or time.monotonic() > deadline:
            return status
        time.sleep(0.1)


def _one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


# -- the workflow of the issue ---------------------------------------------------


def test_two_runs_split_one_workload_across_a_served_market(tmp_path, config, key_file, env):
    """serve + a consumers-only run + a producers-only run: the union is the whole.

    The three consumers share one process (--agents-per-process 3): the server
    still sees three agents, by name.
    """
    address = f"127.0.0.1:{free_port()}"
    expected = expected_purchases(load_workload(config))
    with mpmarket(
        tmp_path, "serve", "serve", "--listen", address, "--authkey-file", key_file, env=env
    ) as server:
        start_line = wait_for_start_line(server)
        assert f"serving on {address}" in start_line and f"--connect {address}" in start_line
        common = ("run", config, "--connect", address, "--authkey-file", key_file, "--quiet")
        with mpmarket(
            tmp_path,
            "consumers",
            *common,
            "--only",
            "consumers",
            "--close-market",
            "--agents-per-process",
            "3",
            env=env,
        ) as consumers:
            # No producer yet: the consumers wait in the market, where status sees them.
            status = _wait_for_status(
                address,
                key_file,
                env,
                lambda s: sum(a["role"] == "consumer" for a in s["agents"]) == 3,
            )
            attached = {(a["name"], a["role"]) for a in status["agents"]}
            assert {("alice", "consumer"), ("bob", "consumer"), ("carol", "consumer")} <= attached
            consumer_processes = [
                child
                for child in psutil.Process(consumers.process.pid).children()
                if "resource_tracker" not in " ".join(child.cmdline())
            ]
            assert len(consumer_processes) == 1
            assert len(status["carts"]) == 3 and status["products_bought"] == 0
            assert all(a["host"] == "127.0.0.1" for a in status["agents"])

            with mpmarket(
                tmp_path, "producers", *common, "--only", "producers", env=env
            ) as producers:
                assert consumers.wait() == 0, consumers.stderr
                # The consumers' run closed the market: the producers end cleanly.
                assert producers.wait() == 0, producers.stderr
        assert producers.stdout == "" and producers.stderr == ""
        assert consumers.stderr == ""
        got = Counter(consumers.stdout.splitlines()) + Counter(producers.stdout.splitlines())
        assert got == expected

        status = _status(address, key_file, env)
        assert status["closed"] and status["products_bought"] == sum(expected.values())
        assert status["published"] == (
            status["units_on_sale"] + status["units_in_carts"] + status["products_bought"]
        )
        status = _wait_for_status(address, key_file, env, lambda s: len(s["agents"]) == 1)
        assert [a["role"] for a in status["agents"]] == ["status"]  # all the others left
        assert server.stop(signal.SIGINT) == 0, server.stderr
    assert "products bought" in server.stderr and "balanced" in server.stderr


def test_stopping_serve_ends_attached_producers_cleanly(tmp_path, config, key_file, env):
    address = f"127.0.0.1:{free_port()}"
    with mpmarket(
        tmp_path,
        "serve",
        *("serve", "--listen", address, "--authkey-file", key_file, "--queue-size", "3"),
        env=env,
    ) as server:
        wait_for_start_line(server)
        with mpmarket(
            tmp_path,
            "producers",
            *("run", config, "--connect", address, "--authkey-file", key_file, "--quiet"),
            "--only",
            "producers",
            env=env,
        ) as producers:
            _wait_for_status(address, key_file, env, lambda s: s["units_on_sale"] == 6)
            assert server.stop(signal.SIGTERM) == 0, server.stderr
            assert producers.wait() == 0, producers.stderr
        assert producers.stderr == ""


def test_consumer_shards_without_close_leave_the_market_open(tmp_path, key_file, env):
    """Two consumer shards and a producers run: done, the market stays open."""
    address = f"127.0.0.1:{free_port()}"
    generated = ("run", "--producers", "2", "--consumers", "5", "--seed", "5")
    common = (*generated, "--connect", address, "--authkey-file", key_file, "--quiet")
    with mpmarket(
        tmp_path, "serve", "serve", "--listen", address, "--authkey-file", key_file, env=env
    ) as server:
        wait_for_start_line(server)
        with (
            mpmarket(tmp_path, "producers", *common, "--only", "producers", env=env) as producers,
            mpmarket(
                tmp_path, "c1", *common, "--only", "consumers", "--shard", "1/2", env=env
            ) as c1,
            mpmarket(
                tmp_path, "c2", *common, "--only", "consumers", "--shard", "2/2", env=env
            ) as c2,
        ):
            assert c1.wait() == 0, c1.stderr
            assert c2.wait() == 0, c2.stderr
            got = Counter(c1.stdout.splitlines()) + Counter(c2.stdout.splitlines())
            assert got == expected_purchases(generate(2, 5, seed=5))
            assert len(c1.stdout.splitlines()) and len(c2.stdout.splitlines())
            status = _status(address, key_file, env)
            assert not status["closed"]
            assert sum(a["role"] == "producer" for a in status["agents"]) == 2
            assert producers.process.poll() is None  # still producing
            assert server.stop(signal.SIGTERM) == 0, server.stderr
            assert producers.wait() == 0, producers.stderr


# -- keys -------------------------------------------------------------------------


def test_wrong_key_is_refused_and_the_server_keeps_serving(tmp_path, key_file, env):
    address = f"127.0.0.1:{free_port()}"
    wrong = tmp_path / "wrong"
    wrong.write_text("a-wrong-key-0123456789\n")
    wrong.chmod(0o600)
    with mpmarket(
        tmp_path, "serve", "serve", "--listen", address, "--authkey-file", key_file, env=env
    ) as server:
        wait_for_start_line(server)
        before = _status(address, key_file, env)
        for command in (("status",), ("run", "--producers", "1", "--consumers", "1")):
            refused = run_command(
                *command, "--connect", address, "--authkey-file", wrong, env=env, timeout=30
            )
            assert refused.returncode == 4
            assert _one_error_line(refused.stderr) == (
                f"mpmarket: error: authentication failed for {address}"
            )
            assert refused.stdout == ""
        after = _status(address, key_file, env)
        assert {k: v for k, v in after.items() if k != "agents"} == {
            k: v for k, v in before.items() if k != "agents"
        }
        assert server.stop() == 0


def test_no_key_and_a_non_loopback_address_is_refused(tmp_path, env):
    result = run_command("serve", "--listen", f"0.0.0.0:{free_port()}", env=env, timeout=30)
    assert result.returncode == 2
    line = _one_error_line(result.stderr)
    assert "refusing to listen on 0.0.0.0:" in line and "--authkey-file" in line
    assert not (tmp_path / "runtime").exists()  # no key was made either


def test_default_key_file_is_private_and_the_key_never_shows(tmp_path, config, env):
    """No key given: serve writes one (0600) and prints its path; the key is nowhere else."""
    address = f"127.0.0.1:{free_port()}"
    log_file = tmp_path / "operations.log"
    with mpmarket(
        tmp_path, "serve", "serve", "--listen", address, "--log-file", log_file, env=env
    ) as server:
        start_line = wait_for_start_line(server)
        key_path = tmp_path / "runtime" / "mpmarket" / "authkey"
        assert f"authkey in {key_path} (new)" in start_line
        assert key_path.stat().st_mode & 0o777 == 0o600
        key = key_path.read_text().strip()
        # Workers of this machine find the default key by themselves.
        run = run_command("run", config, "--connect", address, "--close-market", env=env)
        assert run.returncode == 0, run.stderr
        status = run_command("status", "--connect", address, env=env)
        status_json = run_command("status", "--connect", address, "--json", env=env)
        assert status.returncode == status_json.returncode == 0
        assert server.stop() == 0
    outputs = [server.stdout, server.stderr, run.stdout, run.stderr, status.stdout]
    outputs += [status_json.stdout, log_file.read_text()]
    assert " place_order(" in outputs[-1]
    for text in outputs:
        assert key not in text and key.encode().hex() not in text


def test_a_key_from_the_environment_never_shows(tmp_path, config):
    env = clean_env(tmp_path, MPMARKET_AUTHKEY=KEY)
    address = f"127.0.0.1:{free_port()}"
    with mpmarket(tmp_path, "serve", "serve", "--listen", address, env=env) as server:
        assert "authkey from $MPMARKET_AUTHKEY" in wait_for_start_line(server)
        run = run_command("run", config, "--connect", address, "--close-market", env=env)
        assert run.returncode == 0, run.stderr
        assert server.stop() == 0
    for text in (server.stderr, run.stdout, run.stderr):
        assert KEY not in text
    assert not (tmp_path / "runtime").exists()


# -- failures -----------------------------------------------------------------------


@pytest.mark.parametrize("command", [("status",), ("run", "--producers", "1")])
def test_an_unreachable_market_is_one_line_and_exit_4(tmp_path, key_file, env, command):
    address = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = run_command(
        *command,
        *("--connect", address, "--authkey-file", key_file, "--connect-timeout", "0.5"),
        env=env,
    )
    assert result.returncode == 4
    assert _one_error_line(result.stderr) == (
        f"mpmarket: error: cannot reach market at {address}: connection refused"
    )
    assert result.stdout == ""
    assert time.monotonic() - started < 20


def test_run_connect_waits_for_a_server_that_starts_later(tmp_path, config, key_file, env):
    address = f"127.0.0.1:{free_port()}"
    common = ("run", config, "--connect", address, "--authkey-file", key_file, "--quiet")
    with mpmarket(
        tmp_path, "run", *common, "--connect-timeout", "30", "--close-market", env=env
    ) as run:
        time.sleep(1.0)
        assert run.process.poll() is None
        with mpmarket(
            tmp_path, "serve", "serve", "--listen", address, "--authkey-file", key_file, env=env
        ) as server:
            assert run.wait() == 0, run.stderr
            assert Counter(run.stdout.splitlines()) == expected_purchases(load_workload(config))
            assert server.stop() == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--only", "producers"), "--only only go with --connect"),
        (("--close-market",), "--close-market only go with --connect"),
        (("--connect", "127.0.0.1:1", "--log-file", "x.log"), "give it to mpmarket serve"),
        (("--connect", "127.0.0.1:1", "--agents", "nobody"), "no agent named nobody"),
        (("--connect", "nowhere"), "expected HOST:PORT"),
        (("--connect", "127.0.0.1:1", "--shard", "3/2"), "expected K/N"),
    ],
)
def test_remote_options_are_checked(tmp_path, key_file, env, args, message):
    key = ("--authkey-file", key_file) if "--connect" in args else ()
    result = run_command("run", *key, *args, env=env, timeout=30)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_serve_on_a_busy_port_is_one_line(tmp_path, key_file, env):
    address = f"127.0.0.1:{free_port()}"
    with mpmarket(
        tmp_path, "serve", "serve", "--listen", address, "--authkey-file", key_file, env=env
    ) as server:
        wait_for_start_line(server)
        second = run_command("serve", "--listen", address, "--authkey-file", key_file, env=env)
        assert second.returncode == 1
        assert _one_error_line(second.stderr) == (
            f"mpmarket: error: cannot listen on {address}: address already in use"
        )
        assert server.stop() == 0


# -- the server through a real proxy -----------------------------------------------


@pytest.fixture
def served():
    authkey = new_authkey()
    manager = start_server(2, authkey=authkey, ctx=multiprocessing.get_context("fork"))
    try:
        yield manager.address, authkey
    finally:
        manager.shutdown()


def _unhashable_tea() -> Tea:
    tea = Tea.__new__(Tea)  # as a pickle from anywhere could build it
    for name, value in (("name", ["a", "list"]), ("price", 1), ("type", "x")):
        object.__setattr__(tea, name, value)
    return tea


def test_wrong_type_calls_are_refused_and_the_books_stay_balanced(served):
    market = connect(*served)
    producer = market.register_producer()
    cart = market.new_cart()
    assert market.publish(producer, LINDEN)
    calls = [
        lambda: market.publish("0", LINDEN),
        lambda: market.publish(True, LINDEN),
        lambda: market.publish(producer, "Linden"),
        lambda: market.publish(producer, _unhashable_tea()),
        lambda: market.publish(producer, LINDEN, math.nan),
        lambda: market.publish(producer, LINDEN, "1"),
        lambda: market.add_many(cart, LINDEN, -1),
        lambda: market.add_many(cart, LINDEN, 1.5),
        lambda: market.add_many(cart, _unhashable_tea(), 1),
        lambda: market.add_many(None, LINDEN, 1),
        lambda: market.add_to_cart(cart, {"name": "Linden"}),
        lambda: market.remove_many(cart, LINDEN, "2"),
        lambda: market.remove_from_cart([cart], LINDEN),
        lambda: market.place_order(str(cart)),
    ]
    for number, call in enumerate(calls):
        with pytest.raises(InvalidArgumentError):
            call()
        assert market.books().balanced, f"call {number} unbalanced the books"
    books = market.books()
    assert (books.published, books.on_sale, books.in_carts) == (1, 1, 0)
    assert market.add_to_cart(cart, LINDEN) and market.place_order(cart) == [LINDEN]
    assert market.books().balanced


def test_only_the_market_operations_are_reachable(served):
    address, authkey = served
    for method, args in [
        ("create", ("Marketplace",)),
        ("debug_info", ()),
        ("number_of_objects", ()),
        ("incref", ("market",)),
        ("decref", ("market",)),
        ("get_methods", ("market",)),
        ("dummy", ()),
    ]:
        conn = open_connection(address, authkey, time.monotonic() + 10)
        try:
            with pytest.raises(managers.RemoteError, match="unrecognized"):
                managers.dispatch(conn, None, method, args)
        finally:
            conn.close()
    market = connect(address, authkey)
    conn = market._tls.connection
    for ident, method in [
        ("market", "_put_on_sale"),
        ("market", "__init__"),
        ("market", "#GETVALUE"),
        ("market", "__repr__"),
        ("session", "_clients"),
        ("0", "anything"),
        ("nothing", "close"),
    ]:
        with pytest.raises(managers.RemoteError):
            managers.dispatch(conn, ident, method, ())
    assert market.new_cart() == 0 and market.books().balanced
    assert str(market) == repr(market)  # answered here, not by the server


def test_a_worker_of_another_version_is_refused_at_attach(served, monkeypatch):
    address, authkey = served
    monkeypatch.setattr(client_module, "__version__", "9.9.9")
    with pytest.raises(VersionMismatchError) as raised:
        connect(address, authkey, timeout=5)
    message = str(raised.value)
    assert f"mpmarket 9.9.9 (protocol {PROTOCOL_VERSION})" in message
    assert f"runs mpmarket {mpmarket_version} (protocol {PROTOCOL_VERSION})" in message
    assert "\n" not in message
    monkeypatch.setattr(client_module, "PROTOCOL_VERSION", 99)
    monkeypatch.setattr(client_module, "__version__", mpmarket_version)
    with pytest.raises(
        VersionMismatchError, match=rf"\(protocol 99\).*\(protocol {PROTOCOL_VERSION}\)"
    ):
        connect(address, authkey, timeout=5)
    monkeypatch.undo()
    market = connect(address, authkey, role="status", name="checker")
    assert [(a.name, a.role) for a in market.agents()] == [("checker", "status")]
    assert isinstance(raised.value, MarketUnavailableError)


def test_hello_is_one_round_trip_per_connection(served):
    address, authkey = served
    market = connect(address, authkey, role="producer", name="p1")
    # Attach from another thread, whose proxy (and connection) goes when it ends.
    attached, leave = threading.Event(), threading.Event()

    def consumer() -> None:
        other = connect(address, authkey, role="consumer", name="c1")
        attached.set()
        leave.wait(20)
        other.disconnect()

    helper = threading.Thread(target=consumer, name="helper")
    helper.start()
    try:
        assert attached.wait(20)
        agents = market.agents()
        assert [(a.name, a.role, a.host) for a in agents] == [
            ("p1", "producer", "127.0.0.1"),
            ("c1", "consumer", "127.0.0.1"),  # a name given is used as it is
        ]
    finally:
        leave.set()
        helper.join(timeout=20)
    deadline = time.monotonic() + 10
    while len(market.agents()) != 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [a.name for a in market.agents()] == ["p1"]
    conn = market._tls.connection
    ours = (mpmarket_version, PROTOCOL_VERSION)
    assert managers.dispatch(conn, SESSION_IDENT, "hello", ("x", 0, "r", "n")) == ours
    # A client of our versions also learns the market's identity.
    hello = managers.dispatch(conn, SESSION_IDENT, "hello", (*ours, "r", "n"))
    assert hello == (*ours, market.market_id)


def test_without_a_name_a_connection_is_named_after_its_process_and_thread(served):
    address, authkey = served
    names: list[str] = []

    def attach() -> None:
        market = connect(address, authkey, role="status")
        names.extend(a.name for a in market.agents() if a.role == "status")
        market.disconnect()

    helper = threading.Thread(target=attach, name="helper")
    helper.start()
    helper.join(timeout=20)
    assert names == [f"{multiprocessing.current_process().name}|helper"]


def test_snapshot_through_the_proxy(served):
    market = connect(*served)
    producers = [market.register_producer() for _ in range(2)]
    cart = market.new_cart()
    market.publish(producers[0], LINDEN)
    market.publish(producers[1], ARABICA)
    market.publish(producers[1], LINDEN)
    market.add_to_cart(cart, LINDEN)
    snapshot = market.snapshot()
    assert snapshot.on_sale == ((1, LINDEN, 1), (1, ARABICA, 1))
    assert snapshot.carts == (1,) and snapshot.producers == 2 and snapshot.published == 3
    assert snapshot.units_on_sale == 2 and snapshot.units_in_carts == 1


# -- pure parts --------------------------------------------------------------------


def test_shards_are_disjoint_and_cover_the_workload():
    workload = generate(5, 7, seed=1)
    names = [a.name for a in (*workload.producers, *workload.consumers)]
    seen = []
    for k in range(1, 4):
        part = pick_agents(workload, shard=(k, 3))
        seen += [a.name for a in (*part.producers, *part.consumers)]
    assert sorted(seen) == sorted(names)
    only = pick_agents(workload, only="consumers", names=("cons2", "cons5", "prod1"))
    assert [a.name for a in only.consumers] == ["cons2", "cons5"] and not only.producers
    with pytest.raises(ValueError, match="no agent named ghost"):
        pick_agents(workload, names=("ghost",))
    with pytest.raises(ValueError, match="left to run here"):
        pick_agents(workload, only="producers", names=("cons1",))


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("", False),
        ("::", False),
        ("10.1.2.3", False),
    ],
)
def test_loopback_detection(host, loopback):
    assert is_loopback(host) is loopback


# -- the lease of remote carts ---------------------------------------------------

FROZEN_CONSUMER = """
import sys
from mpmarket.errors import CartRevokedError
from mpmarket.products import Tea
from mpmarket.net.client import connect
from mpmarket.net.wire import parse_address

market = connect(parse_address(sys.argv[1]), open(sys.argv[2]).read().strip().encode())
producer = market.register_producer()
cart = market.new_cart()
for _ in range(3):
    market.publish(producer, Tea("Linden", 9, "Herbal"))
assert market.add_many(cart, Tea("Linden", 9, "Herbal"), 3) == 3
print("holding", flush=True)
sys.stdin.readline()  # frozen here (SIGSTOP) past the lease, then woken
try:
    market.place_order(cart)
except CartRevokedError as error:
    print(f"refused: {error}", flush=True)
    sys.exit(3)
print("sold twice", flush=True)
"""


def test_a_frozen_remote_consumer_loses_its_cart_and_cannot_buy_it_twice(tmp_path, key_file, env):
    address = f"127.0.0.1:{free_port()}"
    script = tmp_path / "frozen.py"
    script.write_text(FROZEN_CONSUMER)
    with mpmarket(
        tmp_path, "serve", "serve", "--listen", address, "--authkey-file", key_file,
        "--cart-lease", "1", "--quiet", env=env,
    ) as server:  # fmt: skip
        wait_for_start_line(server)
        consumer = subprocess.Popen(
            [sys.executable, str(script), address, str(key_file)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,
        )
        try:
            assert consumer.stdout.readline().strip() == "holding"
            consumer.send_signal(signal.SIGSTOP)
            status = _wait_for_status(
                address, key_file, env, lambda s: s["books"]["on_sale"] == 3, timeout=20
            )
            assert status["books"]["on_sale"] == 3 and status["books"]["in_carts"] == 0
            assert status["books"]["balanced"] and status["books"]["violations"] == []
            consumer.send_signal(signal.SIGCONT)
            out, _ = consumer.communicate("go\n", timeout=20)
            assert consumer.returncode == 3, out
            assert "refused: cart 0 was released" in out
        finally:
            if consumer.poll() is None:
                os.killpg(consumer.pid, signal.SIGKILL)
                consumer.communicate()
        assert server.stop() == 0, server.stderr
