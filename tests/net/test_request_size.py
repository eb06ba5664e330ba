"""Bounded requests, read in linear time: raw loopback sockets against a served market.

The market is served in this process (``ServedMarket``): a test can read the
serving thread's CPU time and this process's peak address space, which is
where an allocation of a request's claimed length would show.
"""

from __future__ import annotations

import logging
import os
import pickle
import socket
import struct
import threading
import time
from multiprocessing import connection, managers

import pytest

from mpmarket.core.market import Marketplace
from mpmarket.errors import InvalidArgumentError
from mpmarket.net import server as server_module
from mpmarket.net.client import connect, open_connection
from mpmarket.net.server import ServedMarket, new_authkey
from mpmarket.net.wire import DEFAULT_MAX_REQUEST_SIZE, MARKET_IDENT, set_receive_timeout
from mpmarket.products import Product
from tests.net.remote_helpers import clean_env, free_port, mpmarket, wait_for_start_line

CALL_S = 10.0  # a generous bound on any single answer
TWO_GIB = 0x7FFFFFFF
# What an allocation of a claimed length would add to the peak address space.
GIB = 1 << 30


def _serve(limit: int = DEFAULT_MAX_REQUEST_SIZE):
    market = Marketplace(3)
    authkey = new_authkey()
    serving = ServedMarket(market, ("127.0.0.1", 0), authkey, max_request_size=limit)
    serving.start()
    return serving, authkey


@pytest.fixture
def served():
    serving, authkey = _serve()
    try:
        yield serving, authkey
    finally:
        serving.market.close()


def _attach(serving, authkey) -> connection.Connection:
    conn = open_connection(serving.address, authkey, time.monotonic() + CALL_S)
    managers.dispatch(conn, None, "accept_connection", ("size-test",))
    return conn


def _peak_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmPeak:"):
                return int(line.split()[1])
    raise AssertionError("no VmPeak")


def _closed(sock: socket.socket) -> bool:
    """True if the peer hangs up within CALL_S (b"" or a reset), False if it waits."""
    sock.settimeout(CALL_S)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


def _request(product: Product) -> tuple:
    return (MARKET_IDENT, "publish", (0, product), {})


def _size(request: tuple) -> int:
    return len(pickle.dumps(request, pickle.HIGHEST_PROTOCOL))


def _product_of_size(size: int) -> Product:
    """A product whose publish request is exactly ``size`` bytes long."""
    base = _size(_request(Product("x" * 1000, 1)))
    product = Product("x" * (1000 + size - base), 1)
    assert _size(_request(product)) == size
    return product


@pytest.mark.parametrize(
    "header",
    [struct.pack("!i", TWO_GIB), struct.pack("!i", -1) + struct.pack("!Q", 1 << 40)],
    ids=["2GiB", "1TiB-long-form"],
)
def test_a_huge_length_header_is_refused_without_allocating_it(served, header, caplog):
    serving, authkey = served
    other = connect(serving.address, authkey)
    conn = _attach(serving, authkey)
    peak = _peak_kib()
    sock = socket.socket(fileno=conn.fileno())
    try:
        sock.sendall(header)
        kind, error = conn.recv()  # a readable error first ...
        assert kind == "#ERROR" and isinstance(error, InvalidArgumentError)
        assert "max-request-size" in str(error)
        assert _closed(sock)  # ... then the connection is closed
    finally:
        sock.detach()
        conn.close()
    assert (_peak_kib() - peak) * 1024 < GIB
    assert other.new_cart() == 0  # everyone else is served on
    refusals = [r for r in caplog.records if "refused a request" in r.getMessage()]
    assert len(refusals) == 1


@pytest.mark.parametrize("stage", ["before the key", "before accept_connection is answered"])
def test_a_huge_length_in_the_handshake_is_refused(served, stage, monkeypatch):
    """The standard library's handshake reads: nothing past 256 bytes, nor a request's limit."""
    serving, authkey = served
    # A server waiting for the claimed bytes would hold the connection this long.
    monkeypatch.setattr(server_module, "HANDSHAKE_TIMEOUT", 60.0)
    peak = _peak_kib()
    sock = socket.create_connection(serving.address)
    set_receive_timeout(sock.fileno(), CALL_S)
    conn = connection.Connection(os.dup(sock.fileno()))
    try:
        if stage == "before the key":
            assert conn.recv_bytes(256).startswith(b"#CHALLENGE#")
        else:
            connection.answer_challenge(conn, authkey)
            connection.deliver_challenge(conn, authkey)
        sock.sendall(struct.pack("!i", TWO_GIB))
        assert _closed(sock)
    finally:
        conn.close()
        sock.close()
    assert (_peak_kib() - peak) * 1024 < GIB
    assert connect(serving.address, authkey).new_cart() == 0


def test_a_request_of_the_limit_is_served_and_one_byte_more_is_refused(caplog):
    limit = 8192
    serving, authkey = _serve(limit)
    try:
        conn = _attach(serving, authkey)
        other = _attach(serving, authkey)
        assert managers.dispatch(conn, MARKET_IDENT, "register_producer") == 0
        conn.send(_request(_product_of_size(limit)))
        assert conn.recv() == ("#RETURN", True)
        with caplog.at_level(logging.WARNING):
            conn.send(_request(_product_of_size(limit + 1)))
            kind, error = conn.recv()
        assert kind == "#ERROR" and isinstance(error, InvalidArgumentError)
        assert "8,193 bytes" in str(error) and "at most 8,192" in str(error)
        with pytest.raises(EOFError):
            conn.recv()
        conn.close()
        books = managers.dispatch(other, MARKET_IDENT, "books")
        assert books.published == 1  # nothing of it reached the market
        refusals = [r for r in caplog.records if "refused a request" in r.getMessage()]
        assert len(refusals) == 1 and "8,193 bytes" in refusals[0].getMessage()
        assert serving.connections() == 1  # the refused connection is gone
    finally:
        serving.market.close()


def _loop_cpu_s(serving: ServedMarket) -> float:
    ident = serving._server.loop._thread_id
    (thread,) = [t for t in threading.enumerate() if t.ident == ident]
    with open(f"/proc/self/task/{thread.native_id}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.timeout(120)
def test_a_large_allowed_request_is_read_in_linear_time_and_others_are_served_meanwhile():
    """128 MiB: re-copying what was read on each read took 19.6 s of the server's CPU."""
    size = 128 << 20
    serving, authkey = _serve(size + (1 << 20))
    try:
        conn = _attach(serving, authkey)
        producer = managers.dispatch(conn, MARKET_IDENT, "register_producer")
        payload = pickle.dumps((MARKET_IDENT, "publish", (producer, Product("x" * size, 1)), {}))
        frame = struct.pack("!i", len(payload)) + payload
        del payload
        other = _attach(serving, authkey)
        done = threading.Event()
        answers = 0

        def keep_calling() -> None:
            nonlocal answers
            while not done.is_set():
                managers.dispatch(other, MARKET_IDENT, "books")
                answers += 1

        cpu = _loop_cpu_s(serving)
        caller = threading.Thread(target=keep_calling)
        caller.start()
        sock = socket.socket(fileno=conn.fileno())
        try:
            # Streamed in pieces, so that the other client's calls fall in between.
            view = memoryview(frame)
            for at in range(0, len(frame), 4 << 20):
                sock.sendall(view[at : at + (4 << 20)])
            before_answer = answers
            assert conn.poll(60) and conn.recv() == ("#RETURN", True)
        finally:
            sock.detach()
            done.set()
            caller.join(CALL_S)
        used = _loop_cpu_s(serving) - cpu
        print(f"serving thread CPU for a 128 MiB request: {used:.2f} s; {answers} other answers")
        assert before_answer > 0  # the other client was answered while the big one streamed
        assert used < 5.0  # quadratic reading took 19.6 s
    finally:
        serving.market.close()


@pytest.mark.timeout(90)
def test_serve_max_request_size_refuses_one_client_and_serves_the_others(tmp_path):
    port = free_port()
    key = "a-test-key-0123456789abcdef"
    env = clean_env(tmp_path, MPMARKET_AUTHKEY=key)
    with mpmarket(
        tmp_path,
        "serve",
        "serve",
        "--listen",
        f"127.0.0.1:{port}",
        "--max-request-size",
        "4096",
        "-q",
        env=env,
    ) as server:
        wait_for_start_line(server)
        other = open_connection(("127.0.0.1", port), key.encode(), time.monotonic() + CALL_S)
        managers.dispatch(other, None, "accept_connection", ("other",))
        market = connect(("127.0.0.1", port), key.encode())  # the real proxy
        producer = market.register_producer()
        with pytest.raises(InvalidArgumentError, match="at most 4,096"):
            market.publish(producer, Product("x" * 5000, 1))
        producer = managers.dispatch(other, MARKET_IDENT, "register_producer")
        assert managers.dispatch(other, MARKET_IDENT, "publish", (producer, Product("Tea", 1)))
        assert managers.dispatch(other, MARKET_IDENT, "books").published == 1
        other.close()
        assert server.stop() == 0
        log = server.stderr
        assert log.count("refused a request of") == 1, log
        assert "Traceback" not in log
