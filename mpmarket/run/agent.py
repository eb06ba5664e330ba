"""The agent process's side of a run: attach, wait for the start, run, say how it went.

``process_main`` is what an agent process runs (``fleet.AgentFleet`` starts
it). Like ``_process_worker`` in ``concurrent.futures.process`` it is a
top-level function whose arguments all pickle (the agents' specs, the server's
address and key, the pipe's writing end, the start and stop events, the run's
pid), so it runs the same under fork, spawn and forkserver.

Each agent tells the runner what happens to it with ``messages`` (Ready,
Order, Done, Stats, Closed, Failed), on the one pipe of its process. With
``trace`` each agent keeps its spans in memory (``core.tracing.Recorder``)
and sends them once, in a Trace message just before its last word.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import asdict
from multiprocessing import connection
from typing import Any, NoReturn

from mpmarket.core.agents import AgentStats, consume, produce
from mpmarket.core.classic import ClassicAgent
from mpmarket.core.tracing import Recorder
from mpmarket.core.workload import ConsumerSpec, ProducerSpec
from mpmarket.errors import MarketClosedError, MarketUnavailableError, MpmarketError
from mpmarket.net.classic import attach_classic_agent
from mpmarket.net.client import ATTACH_TIMEOUT, MarketProxy, connect
from mpmarket.net.wire import Address
from mpmarket.proc.interrupts import child_signals
from mpmarket.proc.lifeline import PARENT_CHECK_INTERVAL, Lifeline
from mpmarket.proc.limits import out_of_resources
from mpmarket.products import Product
from mpmarket.run.messages import (
    AgentMessage,
    Closed,
    Done,
    Failed,
    Order,
    Ready,
    Stats,
    Trace,
    encode,
)
from mpmarket.run.plan import Member, pack_name

__all__ = ["process_main"]

Send = Callable[[AgentMessage], None]  # puts one message on the process's pipe


def process_main(
    members: list[Member],
    address: Address,
    authkey: bytes,
    market: str,
    trace: bool,
    channel: connection.Connection,
    start: Any,
    stop: Any,
    parent_pid: int,
) -> None:
    """Entry point of an agent process (top level and picklable for spawn).

    One agent runs on the main thread. Several (``agents_per_process``) run a
    thread each, with a connection each; every message goes through the one
    pipe, carrying the agent's place in ``members`` as its slot. ``market``
    is the kind of market at ``address``: mpmarket's, or ``"classic"``;
    ``trace``: record spans and send them at the end (``--trace``).
    """
    child_signals()  # the runner acts on Ctrl-C and SIGHUP; SIGTERM ends this process
    lifeline = Lifeline(parent_pid)
    sending = threading.Lock()

    def send(message: AgentMessage) -> None:
        raw = encode(message)
        with sending:
            channel.send(raw)

    if len(members) == 1:
        role, spec = members[0]
        _agent_main(role, spec, 0, address, authkey, send, start, stop, lifeline, market, trace)
        return
    threads = [
        threading.Thread(
            target=_agent_main,
            args=(role, spec, slot, address, authkey, send, start, stop, lifeline, market, trace),
            name=spec.name,
        )
        for slot, (role, spec) in enumerate(members)
    ]
    try:
        for thread in threads:
            thread.start()
    except (RuntimeError, MemoryError, OSError) as error:
        _exit_out_of_resources(pack_name(members), error)
    for thread in threads:
        thread.join()


def _exit_out_of_resources(name: str, error: BaseException) -> NoReturn:
    """A thread the system refused: one line on stderr and the process ends, as a fork's would.

    Under fork ``ForkedProcess`` says it the same way; under spawn and
    forkserver ``multiprocessing`` would print a traceback. The agents
    already started end with the process: the runner reports each one's
    death. Anything but running out of something is a bug, and raises.
    """
    why = out_of_resources(error)
    if why is None:
        raise error
    with contextlib.suppress(Exception):  # stderr closed or gone
        print(f"Process {name}: {why}", file=sys.stderr, flush=True)
    os._exit(1)


def _agent_main(
    role: str,
    spec: ProducerSpec | ConsumerSpec,
    slot: int,
    address: Address,
    authkey: bytes,
    send: Send,
    start: Any,
    stop: Any,
    lifeline: Lifeline,
    kind: str = "mpmarket",
    trace: bool = False,
) -> None:
    """One agent, from attaching to its last word on the pipe.

    A failure ends it with SystemExit: the process's exit code, or just the
    end of its thread when it shares the process.
    """

    def ready(ident: int) -> None:
        send(Ready(slot, ident))
        while not start.wait(PARENT_CHECK_INTERVAL):
            if not lifeline.alive():
                raise SystemExit(1)

    def deliver(_consumer: str, products: list[Product]) -> None:
        send(Order(slot, products))

    stats = AgentStats()
    recorder = Recorder() if trace else None

    def send_trace() -> None:
        """The spans, once, before the agent's last word (``--trace``)."""
        nonlocal recorder
        if recorder is not None:
            spans, dropped, recorder = recorder.spans, recorder.dropped, None
            with contextlib.suppress(OSError):
                send(Trace(slot, spans, dropped))

    try:
        market: MarketProxy | ClassicAgent
        if kind == "classic":  # the course's design: its waits sleep here, client-side
            market = attach_classic_agent(address, authkey, spec, timeout=ATTACH_TIMEOUT)
        else:
            market = connect(address, authkey, timeout=ATTACH_TIMEOUT, role=role, name=spec.name)
        if role == "producer":
            try:
                produce(  # the classic reference keeps the course's producer: no schedule
                    market,
                    spec,  # type: ignore[arg-type]
                    stop,
                    ready,
                    stats,
                    recorder,
                    keep_schedule=kind != "classic",
                )
            finally:
                send_trace()
                with contextlib.suppress(OSError):
                    send(Stats(slot, asdict(stats)))
        else:
            consume(market, spec, deliver, stop, ready, stats, recorder)  # type: ignore[arg-type]
            send_trace()
            send(Done(slot, asdict(stats)))
    except MarketClosedError:
        send_trace()
        if role == "consumer":  # someone else closed the market too early
            _report_failure(send, slot, "the market was closed before it finished")
        with contextlib.suppress(OSError):  # the normal end of a producer
            send(Closed(slot))
    except MarketUnavailableError as error:
        send_trace()
        _report_failure(send, slot, str(error), market_lost=True)
    except MpmarketError as error:
        send_trace()
        _report_failure(send, slot, str(error))
    except Exception:
        send_trace()
        _report_failure(send, slot, traceback.format_exc(limit=3).strip().splitlines()[-1])


def _report_failure(send: Send, slot: int, why: str, *, market_lost: bool = False) -> None:
    with contextlib.suppress(OSError):
        send(Failed(slot, why, market_lost))
    raise SystemExit(1)
