"""The runner <-> agent messages: pickled, encoded, decoded, refused; read by the fleet.

And the rule that keeps them typed: no module but ``run/messages.py`` builds
or matches a string-tagged message, not even the benchmarks' processes
(``bench/workers.py``), which speak the same messages in the same fleet.
"""

from __future__ import annotations

import ast
import multiprocessing
import pickle
from pathlib import Path

import pytest

import mpmarket
from mpmarket.core.workload import ConsumerSpec, ProducerSpec
from mpmarket.errors import MpmarketError, RunError
from mpmarket.products import Coffee, Tea
from mpmarket.run import messages
from mpmarket.run.fleet import AgentFleet
from mpmarket.run.messages import (
    Closed,
    Died,
    Done,
    Failed,
    MessageError,
    Order,
    Ready,
    Result,
    Stats,
    Trace,
    decode,
    encode,
)

SENT = [
    Ready(0, 7),
    Order(2, [Tea("Linden", 9, "Herbal"), Coffee("Arabica", 12, 5.5, "DARK")]),
    Done(1, {"sessions": 3, "bought": 9}),
    Stats(0, {"published": 12}),
    Closed(3),
    Failed(0, "the market went away", True),
    Failed(1, "unknown cart id 4"),
    Ready(0),  # a benchmark process: no agent, no ident
    Result(0, (5000, 1.25, 1.5)),
    Result(0, None),
    Trace(1, [("add waiting", 10, 25, "Linden"), ("order", 30, 31, 2)], 0),
]


@pytest.mark.parametrize("message", SENT, ids=lambda m: type(m).__name__)
def test_a_message_pickles_and_survives_the_pipe(message):
    assert pickle.loads(pickle.dumps(message)) == message
    raw = pickle.loads(pickle.dumps(encode(message)))
    assert type(raw) is tuple  # plain tuples on the pipe: no class path per message
    assert decode(raw) == message


def test_every_message_class_is_covered():
    assert {type(m) for m in SENT} | {Died} == set(messages.AgentMessage.__args__)


def test_died_pickles_but_no_agent_sends_it():
    assert pickle.loads(pickle.dumps(Died(0, "killed by SIGKILL"))) == Died(0, "killed by SIGKILL")
    with pytest.raises(MessageError, match="Died is not sent"):
        encode(Died(0, "killed by SIGKILL"))


def test_messages_are_frozen():
    with pytest.raises(AttributeError):
        Ready(0, 1).ident = 2  # type: ignore[misc]


@pytest.mark.parametrize(
    "raw",
    [
        None,
        "ready",
        (),
        (0,),
        ["ready", 0],
        (0, "ready"),  # no ident
        (0, "ready", 1, 2),  # one field too many
        (0, "shout", 1),  # no such message
        (0, ["ready"], 1),  # an unhashable tag
        (-1, "closed"),
        ("0", "closed"),
        (True, "closed"),
        (0, "died", "killed"),  # the fleet's word, never an agent's
    ],
)
def test_a_malformed_message_is_a_named_error(raw):
    with pytest.raises(MessageError, match="not an agent message"):
        decode(raw)
    assert issubclass(MessageError, RunError) and issubclass(MessageError, MpmarketError)


# -- the fleet reads them ------------------------------------------------------


class FakeProcess:
    """Enough of a ChildProcess for the fleet to read a pipe: it has exited."""

    name = "cons1..cons2"
    pid = None
    sentinel = -1
    exitcode = 0

    def join(self, timeout: float | None = None) -> None:
        pass


@pytest.fixture
def fleet_and_pipe():
    fleet = AgentFleet(multiprocessing.get_context("spawn"))
    reader, writer = multiprocessing.Pipe(duplex=False)
    members = [
        ("consumer", ConsumerSpec("cons1", 0.0, ((),))),
        ("producer", ProducerSpec("prod1", (), 0.0)),
    ]
    fleet._track(reader, FakeProcess(), members)  # type: ignore[arg-type]
    yield fleet, writer
    reader.close()
    writer.close()


def test_the_fleet_keeps_each_agents_state(fleet_and_pipe):
    fleet, writer = fleet_and_pipe
    consumer, producer = fleet.agents
    for message in (Ready(0, 4), Ready(1, 0), Done(0, {"sessions": 1}), Stats(1, {"n": 2})):
        writer.send(encode(message))
    received = fleet.next_messages(5.0)
    assert [m for _, m in received][:2] == [Ready(0, 4), Ready(1, 0)]
    assert [a.name for a, _ in received] == ["cons1", "prod1", "cons1", "prod1"]
    assert (consumer.ident, consumer.done, consumer.stats) == (4, True, {"sessions": 1})
    assert (producer.ident, producer.done, producer.stats) == (0, False, {"n": 2})
    writer.close()  # the process ends: the producer had not said its last word
    assert fleet.next_messages(5.0) == [(producer, Died(1, "exited with code 0"))]
    assert producer.done


@pytest.mark.parametrize("raw", [("ready", 0), (2, "ready", 1)], ids=["untagged", "no-slot-2"])
def test_the_fleet_refuses_a_malformed_message(fleet_and_pipe, raw):
    fleet, writer = fleet_and_pipe
    writer.send(raw)
    with pytest.raises(MessageError):
        fleet.next_messages(5.0)


def test_a_result_ends_a_process_and_its_pipe_is_no_death(fleet_and_pipe):
    fleet, writer = fleet_and_pipe
    consumer, producer = fleet.agents
    writer.send(encode(Result(0, [1, 2])))
    writer.send(encode(Closed(1)))
    writer.close()
    assert fleet.next_messages(5.0) == [(consumer, Result(0, [1, 2])), (producer, Closed(1))]
    assert consumer.done and producer.done


# -- no string-tagged message outside messages.py -------------------------------

TAGS = set(messages._TAGS.values()) | {"died"}
PACKAGE = Path(mpmarket.__file__).resolve().parent
EXEMPT = {PACKAGE / "run" / "messages.py"}


def _is_tag(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and node.value in TAGS


def tag_uses(tree: ast.AST) -> list[int]:
    """Lines that compare with, match on, or send a message tag."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for operand in (node.left, *node.comparators):
                elements = (
                    operand.elts
                    if isinstance(operand, ast.Tuple | ast.List | ast.Set)
                    else [operand]
                )
                if any(_is_tag(element) for element in elements):
                    found.append(node.lineno)
        elif isinstance(node, ast.MatchValue) and _is_tag(node.value):
            found.append(node.lineno)
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name == "send" and node.args and _is_tag(node.args[0]):
                found.append(node.lineno)
            for arg in node.args:
                if isinstance(arg, ast.Tuple) and any(_is_tag(e) for e in arg.elts[:2]):
                    found.append(node.lineno)
    return found


def test_the_check_finds_tagged_tuples():
    old_style = """
if message[0] == "done": pass
if kind in ("failed", "died"): pass
send("ready", ident)
channel.send((slot, "order", products))
match kind:
    case "stats": pass
"""
    assert tag_uses(ast.parse(old_style)) == [2, 3, 4, 5, 7]


def test_no_module_but_messages_builds_or_matches_a_tag():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path in EXEMPT or any(parent in EXEMPT for parent in path.parents):
            continue
        for line in tag_uses(ast.parse(path.read_text(encoding="utf-8"))):
            offenders.append(f"{path.relative_to(PACKAGE)}:{line}")
    assert not offenders, "string-tagged messages outside run/messages.py: " + ", ".join(offenders)
