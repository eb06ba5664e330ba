"""A server that runs out of descriptors, threads or memory: real limits on real processes.

``mpmarket serve`` runs as a subprocess under ``prlimit`` (a descriptor limit
from its start, or an address-space limit set on the running process), and
clients speak to it over loopback. What is asserted are outcomes: the CPU
the server burns while at its limit (read from /proc), that no client is
told it is in and then dropped, what ``status`` counts, one log line per
episode, and that serving resumes when the resource comes back.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from multiprocessing import connection, managers

import pytest

from mpmarket import __version__
from mpmarket.net.client import open_connection
from mpmarket.net.wire import MARKET_IDENT, PROTOCOL_VERSION, SESSION_IDENT
from tests.net.remote_helpers import (
    clean_env,
    free_port,
    mpmarket,
    run_command,
    wait_for_start_line,
)

pytestmark = [
    pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs prlimit (util-linux)"),
    pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc"),
]

KEY = "a-test-key-0123456789abcdef"
# Descriptors serve may open: 80 clients cannot all get one.
NOFILE = 64
CLIENTS = 80
# How much CPU a server may use in WINDOW_S while at its limit: a spinning
# accept loop used a whole core (2 s in 2 s).
WINDOW_S = 2.0
CPU_AT_LIMIT_S = 0.5
# A generous bound on waiting for anything the server does.
WAIT_S = 30.0


def _cpu_s(pid: int) -> float:
    """User plus system CPU time of a process so far, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_over(pid: int, seconds: float) -> float:
    before = _cpu_s(pid)
    time.sleep(seconds)
    return _cpu_s(pid) - before


def _attach(address, key: bytes, name: str, seconds: float) -> connection.Connection:
    """Handshake, accept_connection and hello, as a worker does: raises if refused."""
    conn = open_connection(address, key, time.monotonic() + seconds)
    try:
        managers.dispatch(conn, None, "accept_connection", (name,))
        managers.dispatch(
            conn, SESSION_IDENT, "hello", (__version__, PROTOCOL_VERSION, "client", name)
        )
    except BaseException:
        conn.close()
        raise
    return conn


def _wait_for(predicate, what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.05)


def _status_clients(address: str, env: dict[str, str]) -> int:
    result = run_command("status", "--connect", address, "--json", env=env)
    assert result.returncode == 0, result.stderr
    agents = json.loads(result.stdout)["agents"]
    return sum(1 for agent in agents if agent["role"] == "client")


def _stop(server) -> float:
    """SIGTERM serve; the time it took to exit (printed, never asserted)."""
    started = time.monotonic()
    assert server.stop(signal.SIGTERM) == 0, server.stderr
    took = time.monotonic() - started
    print(f"serve stopped in {took:.2f} s")
    return took


@pytest.mark.timeout(150)
def test_out_of_descriptors_serve_pauses_refuses_before_it_says_in_and_recovers(tmp_path):
    port = free_port()
    address = f"127.0.0.1:{port}"
    env = clean_env(tmp_path, MPMARKET_AUTHKEY=KEY)
    prefix = ("prlimit", f"--nofile={NOFILE}:{NOFILE}")
    with mpmarket(
        tmp_path, "serve", "serve", "--listen", address, "-q", env=env, prefix=prefix
    ) as server:
        wait_for_start_line(server)
        pid = server.process.pid

        # 1. Idle connections, no key needed: the server fills its table and waits.
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(CLIENTS)]
        try:
            _wait_for(lambda: len(os.listdir(f"/proc/{pid}/fd")) >= NOFILE - 1, "at the limit")
            used = _cpu_over(pid, WINDOW_S)
            print(f"CPU at the descriptor limit: {used:.2f} s in {WINDOW_S} s")
            assert used < CPU_AT_LIMIT_S
        finally:
            for sock in idle:
                sock.close()

        # 2. Authenticated clients, more than fit: whoever is told it is in is served.
        outcomes: Counter[str] = Counter()
        held: list[connection.Connection] = []
        lock = threading.Lock()

        def attach(index: int) -> None:
            try:
                conn = _attach(("127.0.0.1", port), KEY.encode(), f"c{index}", 8.0)
            except Exception as error:  # refused: never in
                with lock:
                    outcomes[f"refused {type(error).__name__}"] += 1
                return
            try:
                books = managers.dispatch(conn, MARKET_IDENT, "books")
                with lock:
                    outcomes["served" if books.balanced else "unbalanced"] += 1
                    held.append(conn)
            except Exception as error:
                with lock:
                    outcomes[f"in, then dropped: {type(error).__name__}"] += 1
                conn.close()

        threads = [threading.Thread(target=attach, args=(i,)) for i in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT_S)
        print(f"{CLIENTS} clients at a limit of {NOFILE} descriptors: {dict(outcomes)}")
        try:
            assert sum(outcomes.values()) == CLIENTS
            assert all(not kind.startswith("in, then") for kind in outcomes), outcomes
            assert outcomes["served"] == len(held) > 0
            assert len(held) < CLIENTS  # the limit was met
            # While at the limit the server still costs next to nothing.
            assert _cpu_over(pid, WINDOW_S) < CPU_AT_LIMIT_S

            # 3. status counts exactly the clients still attached.
            for conn in held[:10]:
                conn.close()
            del held[:10]
            assert _status_clients(address, env) == len(held)
        finally:
            for conn in held:
                conn.close()

        # 4. Recovered: everyone closed, a new client is served, and it was all logged
        # as one episode, with a line when it ended.
        conn = _attach(("127.0.0.1", port), KEY.encode(), "after", WAIT_S)
        try:
            assert managers.dispatch(conn, MARKET_IDENT, "books").balanced
        finally:
            conn.close()
        _wait_for(lambda: "has file descriptors again" in server.stderr, "the end of the episode")
        log = server.stderr
        assert 1 <= log.count("out of file descriptors") <= 2, log
        assert "Traceback" not in log

        # 5. No client left, none counted: the stop does not wait out the drain.
        _stop(server)


def _vm_size_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1])
    raise AssertionError("no VmSize")


def _set_address_space(pid: int, limit: str) -> None:
    subprocess.run(["prlimit", "--pid", str(pid), f"--as={limit}:"], check=True, timeout=30)


@pytest.mark.timeout(150)
def test_out_of_threads_and_memory_serve_refuses_new_clients_serves_the_others_and_recovers(
    tmp_path,
):
    """An address-space limit just over what serve uses: no thread stack fits (8 MiB)."""
    port = free_port()
    address = ("127.0.0.1", port)
    env = clean_env(tmp_path, MPMARKET_AUTHKEY=KEY, MALLOC_ARENA_MAX="1")
    prefix = ("prlimit", "--stack=8388608")
    with mpmarket(
        tmp_path, "serve", "serve", "--listen", f"127.0.0.1:{port}", "-q", env=env, prefix=prefix
    ) as server:
        wait_for_start_line(server)
        pid = server.process.pid
        attached = _attach(address, KEY.encode(), "before", WAIT_S)
        try:
            producer = managers.dispatch(attached, MARKET_IDENT, "register_producer")
            time.sleep(0.5)  # the handshake thread of ``attached`` is gone
            _set_address_space(pid, str((_vm_size_kib(pid) + 2048) * 1024))
            idle: list[socket.socket] = []
            try:
                # Each new connection needs a handshake thread: silent ones hold theirs
                # (up to the handshake's timeout) until no stack is left for another.
                for _ in range(12):
                    idle.append(socket.create_connection(address))
                _wait_for(
                    lambda: "out of threads" in server.stderr or "out of memory" in server.stderr,
                    "a thread refused",
                    timeout=10.0,
                )
                # The client already in is served on; the server does not spin.
                for _ in range(20):
                    assert managers.dispatch(attached, MARKET_IDENT, "books").balanced
                used = _cpu_over(pid, WINDOW_S)
                print(f"CPU out of threads: {used:.2f} s in {WINDOW_S} s")
                assert used < CPU_AT_LIMIT_S
            finally:
                for sock in idle:
                    sock.close()
                _set_address_space(pid, "unlimited")
            again = _attach(address, KEY.encode(), "after", WAIT_S)
            again.close()
            assert managers.dispatch(attached, MARKET_IDENT, "register_producer") == producer + 1
        finally:
            attached.close()
        _wait_for(lambda: " again after " in server.stderr, "the end of the episode")
        log = server.stderr
        assert log.count("out of threads") + log.count("out of memory") <= 2, log
        assert "Traceback" not in log
        _stop(server)
