"""The runner <-> agent messages: small frozen classes, and their form on the pipe.

Each agent process has one pipe to the runner (``fleet.AgentFleet``), shared
by the agents it runs (``agent.process_main``). An agent says what happens to
it with these messages, each carrying its place in its process, ``slot`` (0
when it has the process to itself)::

    Ready(slot, ident)                attached, waits for the start: its producer or cart id
                                      (None from a benchmark process: it is no agent)
    Order(slot, products)             a consumer placed an order
    Done(slot, stats)                 a consumer finished its sessions (AgentStats as a dict)
    Stats(slot, stats)                a producer's AgentStats, as it ends
    Closed(slot)                      a producer ended because the market was closed
    Failed(slot, why, market_lost)    an agent failed; market_lost: it lost the server
    Result(slot, value)               a benchmark process's body returned ``value``
    Trace(slot, spans, dropped)       an agent's spans (``--trace``), once, before its last word
    Died(slot, how)                   never sent: the fleet's word for an agent whose
                                      process ended before it said Done, Closed,
                                      Failed or Result

After Done, Closed, Failed or Result (``FINAL``) an agent says nothing more.
The benchmarks' processes (``mpmarket.bench.workers``) run in the same fleet
and say Ready, then Result or Failed.

On the pipe a message is a plain tuple ``(slot, tag, *fields)``, as the
tagged tuples it replaces were: a pickled class reference would add its
module path to every order. ``encode`` and ``decode`` are the only code that
knows the tags; everything else matches on the classes. ``decode`` raises
``MessageError`` for anything that is not a message.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from mpmarket.errors import RunError
from mpmarket.products import Product

__all__ = [
    "FINAL",
    "AgentMessage",
    "Closed",
    "Died",
    "Done",
    "Failed",
    "MessageError",
    "Order",
    "Ready",
    "Result",
    "Stats",
    "Trace",
    "decode",
    "encode",
]


class MessageError(RunError):
    """A pipe carried something that is not an agent message."""


@dataclass(frozen=True, slots=True)
class Ready:
    """Set up, waits for the start. ``ident``: producer id or cart id (None: no agent)."""

    slot: int
    ident: int | None = None


@dataclass(frozen=True, slots=True)
class Order:
    """A consumer placed an order of these products."""

    slot: int
    products: list[Product]


@dataclass(frozen=True, slots=True)
class Done:
    """A consumer finished its last session; ``stats`` is its AgentStats as a dict."""

    slot: int
    stats: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Stats:
    """A producer's AgentStats as a dict, sent as it ends (whatever the end)."""

    slot: int
    stats: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Closed:
    """A producer ended because the market was closed: its normal end."""

    slot: int


@dataclass(frozen=True, slots=True)
class Failed:
    """An agent failed, ``why`` in one line; ``market_lost``: it lost the server."""

    slot: int
    why: str
    market_lost: bool = False


@dataclass(frozen=True, slots=True)
class Result:
    """What a benchmark process's body returned (anything that pickles)."""

    slot: int
    value: Any


@dataclass(frozen=True, slots=True)
class Trace:
    """An agent's spans (``core.tracing.Span``) and how many past the cap it dropped."""

    slot: int
    spans: list[tuple[str, int, int, object]]
    dropped: int = 0


@dataclass(frozen=True, slots=True)
class Died:
    """An agent's process ended before the agent's last word (never on a pipe)."""

    slot: int
    how: str


AgentMessage = Ready | Order | Done | Stats | Closed | Failed | Result | Trace | Died

# The messages after which an agent has nothing more to say.
FINAL = (Done, Closed, Failed, Result)

# The tags on the pipe; Died has none: no agent says it.
_TAGS: dict[type[AgentMessage], str] = {
    Ready: "ready",
    Order: "order",
    Done: "done",
    Stats: "stats",
    Closed: "closed",
    Failed: "failed",
    Result: "result",
    Trace: "trace",
}
_CLASSES = {tag: cls for cls, tag in _TAGS.items()}
# The fields after the slot, in order: what follows the tag on the pipe.
_FIELDS = {cls: tuple(f.name for f in fields(cls))[1:] for cls in _TAGS}


def encode(message: AgentMessage) -> tuple[Any, ...]:
    """The tuple that goes on the pipe: ``(slot, tag, *fields)``."""
    cls = type(message)
    tag = _TAGS.get(cls)
    if tag is None:
        raise MessageError(f"{cls.__name__} is not sent on a pipe")
    return (message.slot, tag, *[getattr(message, name) for name in _FIELDS[cls]])


def decode(raw: object) -> AgentMessage:
    """The message a pipe carried; MessageError when it is not one."""
    if isinstance(raw, tuple) and len(raw) >= 2 and isinstance(raw[1], str):
        cls = _CLASSES.get(raw[1])
        slot = raw[0]
        if (
            cls is not None
            and type(slot) is int
            and slot >= 0
            and len(raw) - 2 == len(_FIELDS[cls])
        ):
            return cls(slot, *raw[2:])
    raise MessageError(f"not an agent message: {raw!r:.120}")
