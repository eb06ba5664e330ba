"""AgentFleet: a run's agent processes, what they say, and their bounded stop.

::

    spawn()   a process per agent (or per pack) ──> agent.process_main()
    spawn_process()
              one process, any target that speaks the messages (a benchmark's)
    release() start.set(): every agent at the barrier goes
    next_messages(timeout)
              one WaitSet of every pipe (and the server's sentinel)
              <── pipe: Ready | Order | Done | Stats | Closed | Failed | Trace (messages.decode)
              a process that ended: Died for each of its agents that had not finished
    stop()    stop.set(), drain the pipes for a grace, terminate, kill

Each agent process writes to a pipe of its own, and the fleet waits on
every pipe at once (``proc.waitset.WaitSet``: each registered once, so a wake
costs what is ready, not the hundreds watched): an order, a finished
consumer or a dead process (its pipe ends) wakes it the moment it happens. A killed agent breaks only its own pipe. Under the fork start
method an agent process is a bare fork (``forked.ForkedProcess``), without
what ``multiprocessing.Process`` costs hundreds of agents, and they are forked
``FORK_BATCH`` at a time in a tight loop (``forked.fork_batch``). Agents packed
several to a process share its pipe; a process that dies is the death of each
of its agents that had not finished.

The benchmarks run their processes in this fleet too (``spawn_process``, one
pseudo-agent each: ``mpmarket.bench.workers``): the same start, barrier,
pipes, messages and stop as a run's agents, so that bench measures processes
started as a run starts them.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing import connection
from multiprocessing.context import BaseContext
from typing import Any

from mpmarket.core.workload import ConsumerSpec, Workload
from mpmarket.errors import MarketLostError, RunError
from mpmarket.net.client import ATTACH_TIMEOUT
from mpmarket.net.wire import Address
from mpmarket.proc.flag import ProcessFlag
from mpmarket.proc.forked import ForkedProcess, fork_batch, start_child
from mpmarket.proc.interrupts import Interrupts, blocked
from mpmarket.proc.lifeline import (
    STOP_GRACE,
    TERMINATE_GRACE,
    ChildProcess,
    join_all,
    stop_processes,
)
from mpmarket.proc.limits import FORK_BATCH, FilesNeeded, open_files_needed, spawn_error
from mpmarket.proc.waitset import Handle, WaitSet
from mpmarket.products import Product
from mpmarket.run.agent import process_main
from mpmarket.run.messages import (
    FINAL,
    AgentMessage,
    Died,
    Done,
    Failed,
    MessageError,
    Order,
    Ready,
    Stats,
    Trace,
    decode,
)
from mpmarket.run.plan import Member, pack_agents, pack_name

__all__ = ["SERVER_DEATH_GRACE", "AgentFleet", "AgentState", "how_it_ended", "server_died"]

# How long the runner gives its server's death to show when an agent says it
# lost the market (its own sentinel may come a little later).
SERVER_DEATH_GRACE = 1.0


@dataclass
class AgentState:
    """The runner's view of one agent (the agents of a process share its pipe)."""

    name: str
    role: str
    process: ChildProcess
    done: bool = False  # finished, died or failed: nothing more to wait for
    ident: int | None = None  # its cart id (consumer) or producer id
    stats: dict[str, Any] | None = None  # its AgentStats, sent as it ends
    sessions: int = 0
    orders: int = 0
    trace: Trace | None = None  # its spans, with --trace (sent before its last word)


Received = list[tuple[AgentState, AgentMessage]]


class AgentFleet:
    """The agent processes of one run, with a pipe each and one start barrier.

    ``interrupts`` is where a stop is asked (a signal, stdout lost): spawning
    and every wait look at it, and its wake-up pipe ends a wait at once. A
    stop raises KeyboardInterrupt before any pipe is read, so that nothing
    read is dropped: what waits in the pipes is read by ``stop()``.
    """

    def __init__(
        self,
        ctx: BaseContext,
        interrupts: Interrupts | None = None,
        *,
        market: str = "mpmarket",
        trace: bool = False,
    ) -> None:
        self.ctx = ctx
        self.interrupts = interrupts if interrupts is not None else Interrupts()
        self.market = market  # which market the agents attach to (agent.process_main)
        self.trace = trace  # --trace: the agents record spans and send them (Trace) at the end
        self.agents: list[AgentState] = []
        self._by_channel: dict[connection.Connection, list[AgentState]] = {}  # a process's agents
        # Not multiprocessing.Event: an agent frozen or killed while waiting on
        # one would hang set() for ever (proc.flag).
        self._start = ProcessFlag(ctx)
        self._stop = ProcessFlag(ctx)
        self._files: FilesNeeded | None = None  # what spawn() needs: for its error
        self._waits = WaitSet()  # every open pipe (and, during a wait, what else it watches)

    def spawn(
        self, workload: Workload, agents_per_process: int, address: Address, authkey: bytes
    ) -> None:
        """Start the agent processes: producers, then consumers, packed by role.

        A stop asked meanwhile ends it between two processes (KeyboardInterrupt):
        every process started is tracked, and ``stop()`` ends it. A pipe or
        a fork the system refuses is a ResourceLimitError naming the agent.
        """
        packs = list(pack_agents(workload, agents_per_process))
        agents = sum(map(len, packs))
        self._files = open_files_needed(len(packs), agents, agents_per_process)
        if self.ctx.get_start_method() == "fork":
            for first in range(0, len(packs), FORK_BATCH):
                self.interrupts.check()
                self._fork_batch(packs[first : first + FORK_BATCH], address, authkey)
            return
        for members in packs:
            self.interrupts.check()
            args = (members, address, authkey, self.market, self.trace)
            with blocked():  # a stop is let in once the process is tracked
                reader, process = self._start_process(pack_name(members), process_main, args)
                self._track(reader, process, members)

    def _fork_batch(self, packs: list[list[Member]], address: Address, authkey: bytes) -> None:
        """Fork a process for each pack in one tight loop (``forked.fork_batch``).

        ResourceLimitError, naming the agent, if the system refuses a pipe
        or a fork; the processes forked before it are tracked, and so they
        are whatever else raises (a KeyboardInterrupt: Python's own handler).
        """
        readers: list[connection.Connection] = []
        writers: list[connection.Connection] = []
        processes: list[ForkedProcess] = []
        started, error = 0, None
        # A stop is let in once every process forked is tracked, whatever raised.
        with blocked():
            try:
                for members in packs:
                    reader, writer = self.ctx.Pipe(duplex=False)
                    readers.append(reader)
                    writers.append(writer)
                    args = (members, address, authkey, self.market, self.trace)
                    extra = (writer, self._start, self._stop, os.getpid())
                    processes.append(ForkedProcess(process_main, pack_name(members), args + extra))
                started, error = fork_batch(processes, [writer.fileno() for writer in writers])
            except OSError as no_pipe:  # out of files
                error = no_pipe
            finally:
                for writer in writers:
                    writer.close()
                for index, reader in enumerate(readers):
                    if index < len(processes) and processes[index].pid is not None:
                        self._track(reader, processes[index], packs[index])
                    else:
                        reader.close()
        if error is not None:
            raise spawn_error(f"agent {pack_name(packs[started])}", error, self._files) from error

    def spawn_process(
        self, name: str, target: Callable[..., object], args: tuple[Any, ...], role: str
    ) -> AgentState:
        """Start one process, one agent of ``role``: ``target(*args, channel, start, stop, run_pid)``.

        ``target`` is top level and picklable, as ``agent.process_main`` is,
        and speaks the messages on ``channel`` as slot 0: Ready, then a last
        word (Result or Failed for a benchmark process). It starts with the
        stop signals held back (``forked.start_child``): it lets them in with
        ``interrupts.child_signals()``.
        """
        with blocked():  # a stop is let in once the process is tracked
            reader, process = self._start_process(name, target, args)
            agent = AgentState(name, role, process)
            self.agents.append(agent)
            self._by_channel[reader] = [agent]
            self._waits.add(reader)
        return agent

    def _start_process(
        self, name: str, target: Callable[..., object], args: tuple[Any, ...]
    ) -> tuple[connection.Connection, ChildProcess]:
        """Start ``target(*args, writer, start, stop, run_pid)``; return the pipe's reader.

        ResourceLimitError if the system refuses the pipe or the process.
        """
        try:
            reader, writer = self.ctx.Pipe(duplex=False)
            try:
                process = start_child(
                    self.ctx, target, name, (*args, writer, self._start, self._stop, os.getpid())
                )
            except BaseException:
                reader.close()
                raise
            finally:
                writer.close()
        except OSError as error:  # out of files, processes or memory: one line, no traceback
            what = f"process {name}" if self._files is None else f"agent {name}"
            raise spawn_error(what, error, self._files) from error
        return reader, process

    def _track(
        self, channel: connection.Connection, process: ChildProcess, members: list[Member]
    ) -> None:
        """Read ``channel`` for the agents ``members`` that ``process`` runs."""
        agents = [
            AgentState(
                spec.name,
                role,
                process,
                sessions=len(spec.sessions) if isinstance(spec, ConsumerSpec) else 0,
            )
            for role, spec in members
        ]
        self.agents += agents
        self._by_channel[channel] = agents
        self._waits.add(channel)

    def wait_ready(self, server: ChildProcess | None) -> None:
        """Until every agent is attached; RunError if one fails or they take too long."""
        waiting = len(self.agents)
        deadline = time.monotonic() + ATTACH_TIMEOUT + STOP_GRACE
        while waiting:
            for agent, message in self.next_messages(deadline - time.monotonic(), server):
                match message:
                    case Ready():
                        waiting -= 1
                    case Failed(why=how) | Died(how=how):
                        raise RunError(f"{agent.role} {agent.name} {how} before the start")
            if time.monotonic() > deadline:
                raise RunError(f"{waiting} agents did not attach within {ATTACH_TIMEOUT:.0f} s")

    def release(self) -> None:
        """The start: every agent waiting at the barrier goes."""
        self._start.set()

    def next_messages(self, timeout: float | None, server: ChildProcess | None = None) -> Received:
        """Wait for pipes and sentinels; return messages, deaths as ``Died``.

        A process that ends takes every unfinished agent of its with it. The
        death of ``server`` (a local run's) raises MarketLostError at once. A
        stop asked (``interrupts``) raises KeyboardInterrupt, before any pipe is read.
        """
        self.interrupts.check()
        wake = self.interrupts.fileno()
        ready = self._wait(timeout, server.sentinel if server is not None else None, wake)
        if wake in ready:
            self.interrupts.drain()
            self.interrupts.check()
        messages: Received = []
        for handle in ready:
            if handle == wake:
                continue
            if not isinstance(handle, connection.Connection):
                assert server is not None and handle == server.sentinel
                server.join(SERVER_DEATH_GRACE)  # its sentinel can come before its status
                raise server_died(server)
            agents = self._by_channel[handle]
            received, ended = self._read_pipe(handle)
            messages += received
            if ended and not all(agent.done for agent in agents):
                agents[0].process.join(TERMINATE_GRACE)
                how = how_it_ended(agents[0].process)
                for slot, agent in enumerate(agents):
                    if not agent.done:
                        agent.done = True
                        messages.append((agent, Died(slot, how)))
        return messages

    def _read_pipe(self, channel: connection.Connection) -> tuple[Received, bool]:
        """What waits in a process's pipe, by agent, state kept; True once it ended."""
        agents = self._by_channel[channel]
        messages: Received = []
        try:
            while channel.poll():
                message = decode(channel.recv())
                if message.slot >= len(agents):
                    raise MessageError(f"no agent {message.slot} in {agents[0].process.name}")
                agent = agents[message.slot]
                match message:
                    case Ready(ident=ident):
                        agent.ident = ident
                    case Done(stats=stats) | Stats(stats=stats):
                        agent.stats = stats
                    case Trace():
                        agent.trace = message
                if isinstance(message, FINAL):
                    agent.done = True
                messages.append((agent, message))
        except (EOFError, OSError):
            self._close(channel)
            return messages, True
        return messages, False

    def kill(self, name: str) -> None:
        """Fault injection: SIGKILL the named agent's process (and so its pack), if it runs."""
        for agent in self.agents:
            if agent.name == name and agent.process.exitcode is None and not agent.done:
                agent.process.kill()

    def processes(self) -> list[ChildProcess]:
        return [agents[0].process for agents in self._by_channel.values()]

    def agent_processes(self, *, alive: bool = True) -> dict[int, int]:
        """The agent processes started: pid -> how many agents it runs (for memory figures)."""
        sizes = {}
        for agents in self._by_channel.values():
            process = agents[0].process
            if process.pid is not None and not (alive and process.exitcode is not None):
                sizes[process.pid] = len(agents)
        return sizes

    def stats(self, sold: Sequence[int]) -> list[dict[str, Any]]:
        """Each agent's name, role and AgentStats for the report; producers' ``sold``."""
        entries = []
        for agent in self.agents:
            entry = {"name": agent.name, "role": agent.role, **(agent.stats or {})}
            if agent.role == "producer" and agent.ident is not None and agent.ident < len(sold):
                entry["sold"] = sold[agent.ident]
            entries.append(entry)
        return entries

    def stop(self, grace: float, on_order: Callable[[AgentState, list[Product]], None]) -> None:
        """Stop every agent, every step bounded: ask, drain for ``grace``, terminate, kill.

        Orders that come while draining go to ``on_order``: what was bought
        is printed, not lost. Asked twice to stop (``interrupts.hurry``, a
        second Ctrl-C), it kills at once, before or during the drain.
        """
        self._stop.set()
        self._start.set()  # agents still at the barrier see the stop
        try:
            self._drain(grace, on_order)
        finally:
            if self.interrupts.hurry:
                self.kill_all()
            else:
                stop_processes(self.processes(), 0.0, TERMINATE_GRACE)
            self._pass_on_orders(on_order)  # what the last of them said before they ended
            for channel in self._by_channel:
                self._close(channel)
            self._waits.close()

    def _wait(self, timeout: float | None, *also: int | None) -> list[Handle]:
        """Wait on every open pipe and, for this wait only, on ``also`` (None: nothing)."""
        extra = [handle for handle in also if handle is not None]
        for handle in extra:  # theirs to close: not kept in the set past this wait
            self._waits.add(handle)
        try:
            return self._waits.wait(timeout)
        finally:
            for handle in extra:
                self._waits.discard(handle)

    def _close(self, channel: connection.Connection) -> None:
        self._waits.discard(channel)  # first: the closed descriptor's number may come back
        channel.close()

    def kill_all(self) -> None:
        """No grace for anyone (the second Ctrl-C)."""
        processes = self.processes()
        for process in processes:
            if process.exitcode is None:
                process.kill()
        join_all(processes, TERMINATE_GRACE)

    def _drain(self, timeout: float, on_order: Callable[[AgentState, list[Product]], None]) -> None:
        """Join the agents for up to ``timeout``, still passing on their orders.

        Asked twice to stop (``interrupts.hurry``), it returns at once.
        """
        deadline = time.monotonic() + timeout
        wake = self.interrupts.fileno()
        sentinels = {p.sentinel for p in self.processes() if p.exitcode is None}
        for sentinel in sentinels:
            self._waits.add(sentinel)
        try:
            while not self.interrupts.hurry:
                remaining = deadline - time.monotonic()
                if not self._waits or remaining <= 0:
                    return  # every pipe closed and every agent process gone
                for handle in self._wait(remaining, wake):
                    if handle == wake:
                        self.interrupts.drain()
                    elif handle in sentinels:  # its pipe reports the end
                        self._waits.discard(handle)
                    elif isinstance(handle, connection.Connection):
                        self._pass_on_orders(on_order, [handle])
        finally:
            for sentinel in sentinels:
                self._waits.discard(sentinel)

    def _pass_on_orders(
        self,
        on_order: Callable[[AgentState, list[Product]], None],
        channels: Sequence[connection.Connection] | None = None,
    ) -> None:
        """Read what waits in ``channels`` (all by default) and pass its orders on."""
        for channel in self._by_channel if channels is None else channels:
            if channel.closed:
                continue
            try:
                received = self._read_pipe(channel)[0]
            except MessageError:  # the run is ending: stop reading this pipe
                self._close(channel)
                continue
            for agent, message in received:
                if isinstance(message, Order):
                    on_order(agent, message.products)


def how_it_ended(process: ChildProcess | None) -> str:
    code = process.exitcode if process is not None else None
    if code is not None and code < 0:
        return f"killed by {signal.Signals(-code).name}"
    if code is None:
        return "stopped answering"
    return f"exited with code {code}"


def server_died(server: ChildProcess | None) -> MarketLostError:
    """The error of a run whose own market server died."""
    return MarketLostError(f"the market server died ({how_it_ended(server)})")
