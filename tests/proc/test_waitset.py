"""WaitSet: pipes and sentinels registered once, through real pipes and a real child."""

from __future__ import annotations

import multiprocessing
import time

import pytest

from mpmarket.proc.forked import ForkedProcess
from mpmarket.proc.waitset import WaitSet

pytestmark = pytest.mark.timeout(60)


def test_a_wait_returns_only_what_is_ready_and_a_closed_writer_is_ready():
    waits = WaitSet()
    pipes = [multiprocessing.Pipe(duplex=False) for _ in range(3)]
    for reader, _ in pipes:
        waits.add(reader)
    waits.add(pipes[0][0])  # added twice: still one
    assert len(waits) == 3
    assert waits.wait(0.01) == []
    pipes[1][1].send("order")
    assert waits.wait(10) == [pipes[1][0]]
    assert pipes[1][0].recv() == "order"
    pipes[2][1].close()
    assert waits.wait(10) == [pipes[2][0]]
    waits.close()


def test_a_handle_discarded_then_closed_lets_its_number_be_watched_again():
    waits = WaitSet()
    reader, writer = multiprocessing.Pipe(duplex=False)
    number = reader.fileno()
    waits.add(reader)
    waits.discard(reader)
    waits.discard(reader)  # not watched: nothing happens
    reader.close()
    writer.close()
    again, writer = multiprocessing.Pipe(duplex=False)
    assert again.fileno() == number  # the lowest free number comes back
    waits.add(again)
    writer.send("hello")
    assert waits.wait(10) == [again]
    waits.close()


def test_a_sentinel_is_ready_when_its_child_ends():
    waits = WaitSet()
    child = ForkedProcess(time.sleep, "agent-0", (0.05,))
    child.start()
    try:
        waits.add(child.sentinel)
        assert waits.wait(30) == [child.sentinel]
        child.join(30)
        assert child.exitcode == 0
    finally:
        child.kill()
        child.join(10)
        waits.discard(child.sentinel)
        waits.close()
