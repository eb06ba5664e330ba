"""The wake floor: one message to a process blocked idle in ``recv`` on a socket.

The latency benchmark's consumers wait idle for their product: what a
publish costs them is at least what it costs to wake an idle process with
one message. This is that cost alone, on this machine, in the same round:
``receivers`` benchmark processes each connect to the parent over loopback
TCP (``TCP_NODELAY``), as a market's clients do, and block in ``recv``; the
parent sends ``seq`` and its send time every ``period``, message ``seq`` to
receiver ``seq % receivers`` (so with 16 receivers each is idle for 16
periods between two messages, as 16 waiting consumers are); each receiver
notes when its ``recv`` returned. The latency is the receive time minus the
send time, on one clock (``time.perf_counter_ns``, CLOCK_MONOTONIC).
"""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from collections.abc import Callable
from multiprocessing.context import BaseContext

from mpmarket.bench.workers import RESULT_GRACE, _Fleet
from mpmarket.errors import RunError
from mpmarket.net.wire import Address

__all__ = ["WAKE_ACCEPT_TIMEOUT", "WAKE_LEAD", "wake_round"]

# How long after the start the first message goes (every receiver is then in
# recv), and how long the parent waits for its receivers to connect.
WAKE_LEAD = 0.05
WAKE_ACCEPT_TIMEOUT = 30.0

_MESSAGE = struct.Struct("!qq")  # seq, send time (ns)
_HELLO = struct.Struct("!i")  # the receiver's index


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise RunError("the wake floor's sender went away")
        data += chunk
    return data


def _receiver(
    address: Address, index: int, count: int, ready: Callable[[], None]
) -> list[tuple[int, int]]:
    """Receive ``count`` messages, blocked in ``recv`` between them: ``(seq, received_ns)`` each."""
    with socket.create_connection(address, timeout=WAKE_ACCEPT_TIMEOUT) as sock:
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(_HELLO.pack(index))
        ready()
        received = []
        for _ in range(count):
            data = _recv_exactly(sock, _MESSAGE.size)
            now = time.perf_counter_ns()
            seq, _sent = _MESSAGE.unpack(data)
            received.append((seq, now))
        return received


def wake_round(
    receivers: int, total: int, warmup: int, period: float, ctx: BaseContext
) -> list[float]:
    """Latencies (us) of messages ``warmup`` .. ``total - 1`` to idle receivers."""
    with socket.create_server(("127.0.0.1", 0), backlog=receivers) as server:
        server.settimeout(WAKE_ACCEPT_TIMEOUT)
        address = server.getsockname()[:2]
        counts = [len(range(index, total, receivers)) for index in range(receivers)]
        connections: dict[int, socket.socket] = {}
        try:
            with _Fleet(ctx) as fleet:
                for index in range(receivers):
                    fleet.spawn(
                        f"wake-receiver-{index + 1}", _receiver, address, index, counts[index]
                    )
                while len(connections) < receivers:
                    conn, _ = server.accept()
                    conn.settimeout(WAKE_ACCEPT_TIMEOUT)
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    (index,) = _HELLO.unpack(_recv_exactly(conn, _HELLO.size))
                    connections[index] = conn
                fleet.wait_ready()
                fleet.release()
                sent = []
                first = time.perf_counter() + WAKE_LEAD
                for seq in range(total):
                    delay = first + seq * period - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                    now = time.perf_counter_ns()
                    sent.append(now)
                    connections[seq % receivers].sendall(_MESSAGE.pack(seq, now))
                results = fleet.results(RESULT_GRACE)
        finally:
            for conn in connections.values():
                with contextlib.suppress(OSError):
                    conn.close()
    return [
        (received - sent[seq]) / 1000
        for received_list in results
        for seq, received in received_list
        if seq >= warmup
    ]
