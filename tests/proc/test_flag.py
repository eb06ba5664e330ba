"""ProcessFlag: set() returns at once whatever its waiters do, under every start method.

multiprocessing.Event.set() hangs for ever when a waiter was frozen (SIGSTOP)
or killed (SIGKILL) while waiting: these are real processes and real signals.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import pytest

from mpmarket.proc.context import process_context
from mpmarket.proc.flag import ProcessFlag

BOUND_S = 30.0  # generous: the machines are noisy


def _waiter(flag: Any, seen: Any) -> None:
    while not flag.wait(0.5):
        pass
    seen.put(os.getpid())


@pytest.mark.parametrize("start_method", ["fork", "spawn", "forkserver"])
@pytest.mark.parametrize("signum", [signal.SIGSTOP, signal.SIGKILL])
def test_set_returns_although_a_waiter_is_frozen_or_killed(start_method: str, signum: int) -> None:
    ctx = process_context(start_method)
    flag = ProcessFlag(ctx)
    seen = ctx.Queue()
    waiters = [ctx.Process(target=_waiter, args=(flag, seen), daemon=True) for _ in range(3)]
    for waiter in waiters:
        waiter.start()
    try:
        time.sleep(0.3)  # all three wait on the flag
        assert not flag.is_set()
        os.kill(waiters[0].pid, signum)  # type: ignore[arg-type]
        time.sleep(0.1)
        setter = threading.Thread(target=flag.set, daemon=True)
        setter.start()
        setter.join(BOUND_S)
        assert not setter.is_alive(), "set() hung on a frozen or dead waiter"
        assert flag.is_set() and flag.wait(0)
        woke = {seen.get(timeout=BOUND_S) for _ in range(2)}
        assert woke == {waiters[1].pid, waiters[2].pid}
    finally:
        for waiter in waiters:
            if waiter.pid is not None and waiter.exitcode is None:
                os.kill(waiter.pid, signal.SIGCONT)
                waiter.kill()
            waiter.join(BOUND_S)
        seen.close()
        seen.join_thread()


def test_only_its_maker_sets_it() -> None:
    flag = ProcessFlag(process_context("spawn"))
    copy = ProcessFlag.__new__(ProcessFlag)
    copy.__dict__.update(flag.__getstate__())
    with pytest.raises(RuntimeError):
        copy.set()
    flag.set()
    flag.set()  # twice is fine
    assert copy.is_set() and copy.wait(None)
