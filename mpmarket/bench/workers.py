"""The benchmark processes: a fleet with one start barrier, the bench's market server.

Every benchmark measures real processes. ``_Fleet`` spawns them, each running
``_worker_main(body, args, pipe, go)``: ``body(*args, ready)`` sets itself up
(connects, registers), calls ``ready()``, which reports on the pipe and waits
for the fleet's ``go`` event, then does its work and sends its result back.
The parent spawns, waits for every ``ready``, releases them all at one
moment (``release``), and reads every result within a bound. Leaving the
fleet stops it: ``on_stop`` first (closing the market, so that blocked calls
return), then join, terminate, kill, each step bounded.

``_BenchServer`` is one measurement's market server with the parent's own
proxy; ``_server_processes``, ``_rss`` and ``_pss`` read the memory of the
server and of the agents.

::

    parent                                    benchmark process (x N)
    ------                                    -----------------------
    _Fleet.spawn ---- Process(_worker_main) -> body(*args, ready): set up
    wait_ready  <------- ("ready",) ---------  ready(): waits on ``go``
    release()   -------- go.set() ---------->  the measured work
    results()   <------ ("result", value) ---  (or ("failed", message), exit 1)
    stop(): on_stop, join, terminate, kill

Clocks: ``time.perf_counter`` is CLOCK_MONOTONIC on Linux, one clock for the
whole system, so times taken in different processes compare directly.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing import connection
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from typing import Any

import psutil

from mpmarket.core.workload import DEFAULT_QUEUE_SIZE
from mpmarket.errors import MarketUnavailableError, MpmarketError, RunError
from mpmarket.net.client import ATTACH_TIMEOUT, connect
from mpmarket.net.server import MarketManager, new_authkey, start_server
from mpmarket.proc.flag import ProcessFlag
from mpmarket.proc.lifeline import (
    PARENT_CHECK_INTERVAL,
    STOP_GRACE,
    TERMINATE_GRACE,
    stop_processes,
)

__all__ = ["READY_TIMEOUT", "RESULT_GRACE"]

# Bounds of the benchmark processes: attach and reach the start barrier,
# answer after the work is done, and the escalating stop.
READY_TIMEOUT = ATTACH_TIMEOUT + 5.0
RESULT_GRACE = 30.0


def _parent_gone() -> bool:
    """True when the process that started this one has died."""
    parent = multiprocessing.parent_process()
    return parent is not None and not parent.is_alive()


def _worker_main(
    body: Callable[..., Any], args: tuple[Any, ...], channel: connection.Connection, go: Any
) -> None:
    """Entry point of every benchmark process: ``body(*args, ready)``, result to the pipe.

    ``ready()`` tells the parent this process is set up and waits for the start.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C

    def ready() -> None:
        channel.send(("ready",))
        while not go.wait(PARENT_CHECK_INTERVAL):
            if _parent_gone():
                raise SystemExit(1)

    try:
        result = body(*args, ready)
    except MpmarketError as error:
        message = str(error) or type(error).__name__
    except Exception:
        message = traceback.format_exc(limit=3).strip().splitlines()[-1]
    else:
        channel.send(("result", result))
        return
    with contextlib.suppress(OSError):
        channel.send(("failed", message))
    raise SystemExit(1)


@dataclass
class _Worker:
    name: str
    process: BaseProcess
    channel: connection.Connection


class _Fleet:
    """Benchmark processes with a pipe each, one start barrier and a bounded stop.

    Used as a context manager: leaving it calls ``on_stop`` (for instance,
    closing the market so that blocked calls return), then joins every
    process: join, terminate, kill, each step bounded.
    """

    def __init__(self, ctx: BaseContext, on_stop: Callable[[], None] = lambda: None) -> None:
        self._ctx = ctx
        self._go = ProcessFlag(ctx)  # a frozen or killed worker cannot hang set()
        self._on_stop = on_stop
        self.workers: list[_Worker] = []

    def __enter__(self) -> _Fleet:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def spawn(self, name: str, body: Callable[..., Any], *args: Any) -> None:
        reader, writer = self._ctx.Pipe(duplex=False)
        # Every context that process_context returns has a Process class; typeshed
        # declares it only on the concrete contexts, not on BaseContext.
        process = self._ctx.Process(  # type: ignore[attr-defined]
            target=_worker_main, name=name, args=(body, args, writer, self._go), daemon=True
        )
        try:
            process.start()
        except BaseException:
            reader.close()
            raise
        finally:
            writer.close()
        self.workers.append(_Worker(name, process, reader))

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        self._gather("ready", timeout)

    def release(self) -> float:
        """Let every process go; return the moment (perf_counter) it happened."""
        started = time.perf_counter()
        self._go.set()
        return started

    def results(self, timeout: float) -> list[Any]:
        """Each process's result, in spawn order."""
        return self._gather("result", timeout)

    def _gather(self, tag: str, timeout: float) -> list[Any]:
        deadline = time.monotonic() + timeout
        answers: dict[int, Any] = {}
        pending: dict[Any, int] = {  # channel -> index (wait() returns a union)
            worker.channel: index for index, worker in enumerate(self.workers)
        }
        while pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RunError(
                    f"{len(pending)} benchmark processes did not answer within {timeout:.0f} s"
                )
            for channel in connection.wait(list(pending), remaining):
                index = pending.pop(channel)
                worker = self.workers[index]
                try:
                    message = worker.channel.recv()
                except EOFError:
                    worker.process.join(TERMINATE_GRACE)
                    raise RunError(
                        f"benchmark process {worker.name} died (exit code {worker.process.exitcode})"
                    ) from None
                if message[0] == "failed":
                    raise RunError(f"benchmark process {worker.name} failed: {message[1]}")
                if message[0] != tag:
                    raise RunError(f"benchmark process {worker.name} sent {message[0]!r}")
                answers[index] = message[1] if len(message) > 1 else None
        return [answers[index] for index in range(len(self.workers))]

    def stop(self) -> None:
        with contextlib.suppress(MpmarketError, OSError, EOFError):
            self._on_stop()
        self._go.set()  # processes still at the barrier go on and find the end
        _stop_processes([worker.process for worker in self.workers])
        for worker in self.workers:
            worker.channel.close()


def _stop_processes(processes: Sequence[BaseProcess]) -> None:
    """Join, terminate, then kill whatever is left: every step bounded."""
    stop_processes(processes, STOP_GRACE, TERMINATE_GRACE)


class _BenchServer:
    """A market server for one measurement, with the parent's own proxy.

    Leaving it closes the market, drops the proxy and shuts the server down.
    """

    def __init__(self, ctx: BaseContext, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        self.authkey = new_authkey()
        self.manager = start_server(queue_size, authkey=self.authkey, ctx=ctx)
        # A TCP address: start_server listens on ("127.0.0.1", 0).
        self.address = self.manager.address
        try:
            self.market = connect(self.address, self.authkey)
        except BaseException:
            self._shutdown()
            raise

    def __enter__(self) -> _BenchServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
        self.market.disconnect()
        self._shutdown()

    def close(self) -> None:
        """Close the market: blocked calls raise MarketClosedError."""
        with contextlib.suppress(MpmarketError):
            self.market.close()

    def _shutdown(self) -> None:
        with contextlib.suppress(OSError, EOFError, MarketUnavailableError):
            self.manager.shutdown()


def _server_processes() -> list[psutil.Process]:
    """The market server processes started by this process (by their name)."""
    prefix = MarketManager.__name__ + "-"
    found = []
    for child in multiprocessing.active_children():
        if child.name.startswith(prefix) and child.pid is not None:
            with contextlib.suppress(psutil.Error):
                found.append(psutil.Process(child.pid))
    return found


def _rss(process: psutil.Process) -> int | None:
    """RSS in bytes; None once the process has exited (a zombie reads 0)."""
    try:
        return process.memory_info().rss or None
    except psutil.Error:
        return None


def _pss(process: psutil.Process) -> int | None:
    """PSS in bytes where ``/proc/PID/smaps_rollup`` exists (fast), else None.

    None too once the process has exited: a consumer done with its sessions
    is a zombie until the runner reaps it, and reads 0.
    """
    if not os.path.exists(f"/proc/{process.pid}/smaps_rollup"):
        return None
    try:
        return process.memory_full_info().pss or None
    except (psutil.Error, AttributeError):
        return None
