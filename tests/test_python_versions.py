"""What mpmarket does on each Python it claims (3.11 and newer), where Python changed.

CI runs the suite on every CPython 3.11+ the machine has (``.ci/run``); these
tests pin the behaviour that differs between them:

- **The start method.** Python 3.14 makes ``forkserver`` the default on Linux;
  mpmarket keeps ``fork`` where it exists, on every version, as
  ``--start-method`` documents (``[default: fork]``), so runs start as fast.
- **The handshake's digest.** Up to 3.11 ``multiprocessing`` authenticated
  with a 20-byte challenge answered by HMAC-MD5; 3.12 sends
  ``{sha256}`` and 40 bytes, answered with a ``{sha256}``-prefixed HMAC, and
  still takes a bare MD5 answer. mpmarket's server and client use those
  functions, so the digest is the running Python's; the tests below speak the
  wire by hand to check which, and that a worker on one version still attaches
  to a server on another (the mpmarket version must match, not Python's).
"""

from __future__ import annotations

import configparser
import hmac
import multiprocessing
import os
import re
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path

import pytest

from mpmarket.net.client import open_connection
from mpmarket.proc.context import default_start_method, process_context
from mpmarket.pytest_plugin import MarketFixture

# The digest this Python's multiprocessing asks for and answers with.
DIGEST = "sha256" if sys.version_info >= (3, 12) else "md5"
CHALLENGE, WELCOME = b"#CHALLENGE#", b"#WELCOME#"
WAIT_S = 10.0


# -- the start method ------------------------------------------------------------


def test_python_default_start_method_is_the_one_this_version_documents() -> None:
    # get_all_start_methods() lists the platform's default first.
    expected = "forkserver" if sys.version_info >= (3, 14) else "fork"
    assert multiprocessing.get_all_start_methods()[0] == expected


def test_mpmarket_starts_agents_by_fork_on_every_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MPMARKET_START_METHOD", raising=False)
    assert default_start_method() == "fork"
    ctx = process_context()
    assert ctx.get_start_method() == "fork"
    # Really a fork: the child sees what this process set after its imports.
    monkeypatch.setattr(sys.modules[__name__], "MARK", os.getpid(), raising=False)
    parent, child = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_send_mark, args=(child,))
    process.start()
    try:
        child.close()
        assert parent.poll(WAIT_S), "the child sent nothing"
        assert parent.recv() == os.getpid()
    finally:
        process.join(WAIT_S)
        if process.is_alive():
            process.kill()
            process.join()
    assert process.exitcode == 0


def _send_mark(conn: Connection) -> None:
    conn.send(getattr(sys.modules[__name__], "MARK", None))
    conn.close()


def test_the_environment_still_chooses(monkeypatch: pytest.MonkeyPatch) -> None:
    for method in ("spawn", "forkserver", "fork"):
        monkeypatch.setenv("MPMARKET_START_METHOD", method)
        assert default_start_method() == method


# -- the handshake, by hand --------------------------------------------------------


def send_frame(sock: socket.socket, data: bytes) -> None:
    sock.sendall(struct.pack("!i", len(data)) + data)


def recv_frame(sock: socket.socket) -> bytes:
    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise EOFError(f"closed after {len(data)} of {n} bytes")
            data += chunk
        return data

    (size,) = struct.unpack("!i", exactly(4))
    return exactly(size)


def this_pythons_challenge() -> bytes:
    """The challenge this Python's deliver_challenge sends (past ``#CHALLENGE#``)."""
    return b"{sha256}" + os.urandom(40) if DIGEST == "sha256" else os.urandom(20)


def check_challenge_form(message: bytes) -> None:
    if DIGEST == "sha256":
        assert message.startswith(b"{sha256}") and len(message) == 8 + 40, message
    else:
        assert len(message) == 20 and not message.startswith(b"{"), message


def this_pythons_answer(key: bytes, message: bytes) -> bytes:
    mac = hmac.new(key, message, DIGEST).digest()
    return b"{sha256}" + mac if DIGEST == "sha256" else mac


@pytest.fixture
def raw(market: MarketFixture) -> Iterator[socket.socket]:
    """A bare TCP connection to the market server: the test speaks the handshake."""
    sock = socket.create_connection(market.address, timeout=WAIT_S)
    yield sock
    sock.close()


def test_the_server_asks_for_this_pythons_digest(market: MarketFixture, raw: socket.socket) -> None:
    message = recv_frame(raw)
    assert message.startswith(CHALLENGE)
    message = message[len(CHALLENGE) :]
    check_challenge_form(message)
    send_frame(raw, this_pythons_answer(market.authkey, message))
    assert recv_frame(raw) == WELCOME
    # The other way: the server answers a challenge in the same digest.
    ours = this_pythons_challenge()
    send_frame(raw, CHALLENGE + ours)
    assert recv_frame(raw) == this_pythons_answer(market.authkey, ours)
    send_frame(raw, WELCOME)
    # And mpmarket's own client, through the same handshake, gets its answers.
    assert market.proxy.books().producers == 0


def test_a_wrong_answer_is_refused(market: MarketFixture, raw: socket.socket) -> None:
    message = recv_frame(raw)[len(CHALLENGE) :]
    send_frame(raw, this_pythons_answer(b"not the key", message))
    assert recv_frame(raw) == b"#FAILURE#"


def test_a_worker_on_python_3_11_attaches(market: MarketFixture, raw: socket.socket) -> None:
    """What a 3.11 client sends: a bare HMAC-MD5 of the whole challenge, prefix and all."""
    message = recv_frame(raw)[len(CHALLENGE) :]
    send_frame(raw, hmac.new(market.authkey, message, "md5").digest())
    assert recv_frame(raw) == WELCOME
    legacy = os.urandom(20)  # a 3.11 client's challenge
    send_frame(raw, CHALLENGE + legacy)
    assert recv_frame(raw) == hmac.new(market.authkey, legacy, "md5").digest()
    send_frame(raw, WELCOME)


def test_the_client_attaches_to_a_server_on_python_3_11() -> None:
    """mpmarket's client against a peer speaking as a 3.11 server: MD5 both ways."""
    key = os.urandom(32)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(WAIT_S)
    seen: dict[str, object] = {}

    def legacy_server() -> None:
        try:
            sock, _ = listener.accept()
            with sock:
                sock.settimeout(WAIT_S)
                challenge = os.urandom(20)
                send_frame(sock, CHALLENGE + challenge)
                answer = recv_frame(sock)
                seen["answer_ok"] = answer == hmac.new(key, challenge, "md5").digest()
                send_frame(sock, WELCOME)
                theirs = recv_frame(sock)[len(CHALLENGE) :]
                seen["client_challenge"] = theirs
                send_frame(sock, hmac.new(key, theirs, "md5").digest())
                seen["verdict"] = recv_frame(sock)
        except Exception as error:  # reported by the asserts below
            seen["error"] = error

    thread = threading.Thread(target=legacy_server, daemon=True)
    thread.start()
    try:
        conn = open_connection(listener.getsockname(), key, time.monotonic() + WAIT_S)
        conn.close()
    finally:
        thread.join(WAIT_S)
        listener.close()
    assert "error" not in seen, seen
    assert seen["answer_ok"] is True
    client_challenge = seen["client_challenge"]
    assert isinstance(client_challenge, bytes)
    check_challenge_form(client_challenge)
    assert seen["verdict"] == WELCOME


# -- what the package claims -------------------------------------------------------------


def test_the_package_claims_the_python_it_runs_on() -> None:
    """setup.cfg's classifiers and the README name the versions CI tests, this one too."""
    root = Path(__file__).resolve().parents[1]
    config = configparser.ConfigParser()
    config.read(root / "setup.cfg")
    classifiers = config["metadata"]["classifiers"]
    claimed = re.findall(r"Python :: (3\.\d+)$", classifiers, re.M)
    assert config["options"]["python_requires"] == f">={claimed[0]}"
    running = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert running in claimed, (
        f"Python {running} is not in setup.cfg's classifiers: add it there and to the "
        "README once the suite passes on it"
    )
    readme = (root / "README.md").read_text(encoding="utf-8")
    tested = re.search(r"CI tests CPython ([\d., and]+)\)", readme)
    assert tested, "the README's line naming the versions CI tests"
    assert re.findall(r"3\.\d+", tested.group(1)) == claimed
