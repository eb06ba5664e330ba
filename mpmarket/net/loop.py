"""One thread serving every connection of the market server.

The stock manager server gives each connection a thread of its own: with 48
agents, 48 threads take turns on one GIL, and every product handed to a
waiting consumer wakes a blocked thread, which then queues for the GIL behind
the others. Here one thread reads every connection through a selector, runs
each call on the market and writes its answer. A call that has to wait (an add
with too few units on sale, a publish of a full producer) is parked in the
market with a callback; its answer goes out the moment a publish, remove or
release completes it, or when its timeout passes. No thread ever waits for a
product and no thread is ever woken for one. A client that sends faster than
it reads its answers is read no more until it catches up (``OUTBOX_HIGH``,
``BACKLOG_HIGH``), so it cannot make the server hold its answers unbounded.

The wire format is the manager's own: ``multiprocessing.connection`` framing
(a 4-byte big-endian length, or -1 and an 8-byte one) around pickled
``(ident, method, args, kwds)`` requests and ``("#RETURN", result)`` /
``("#ERROR", exception)`` answers, so a stock ``BaseProxy`` works unchanged.
Connections arrive authenticated: the handshake is blocking code of the
standard library, so the server runs it on a short-lived thread per
connection (bounded by a timeout) and then hands the socket over (``adopt``).
The loop answers that connection's ``accept_connection`` itself, once the
connection is registered: a client is told it is in only when it is.

Requests are read with an allow-list (``mpmarket.net.safe_pickle``): one
that names anything but the market's own types is refused before it is built
(its sender gets an ``InvalidArgumentError``, one line is logged, its
connection is closed); a product whose fields are not scalars is answered
as a bad argument.

Reading is linear in a request's size, and bounded (``mpmarket.net.framing``):
a request longer than ``max_request_size`` is refused before any of it is
kept (its sender gets an ``InvalidArgumentError`` naming the limit, the rest
of its request is read and dropped up to ``DRAIN_MAX``, its connection is
closed, and one line is logged); every other client is served between two
reads of a long one.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import pickle
import selectors
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from multiprocessing import connection
from traceback import format_exc
from typing import Any

from mpmarket.core.market import AddWait, Marketplace, PublishWait
from mpmarket.errors import InvalidArgumentError
from mpmarket.net.calls import WAITING_CALLS, Client, Parked, Served
from mpmarket.net.framing import DRAIN_MAX, Framing, header, too_large
from mpmarket.net.mp_private import take_handle
from mpmarket.net.safe_pickle import RefusedPayload, load_request, refused
from mpmarket.net.shortage import Shortages, resource_of
from mpmarket.net.timing import PreciseSelect, precise_timers
from mpmarket.net.tls import TLSConnection
from mpmarket.net.wire import DEFAULT_MAX_REQUEST_SIZE

__all__ = ["ConnectionLoop", "Served"]

_log = logging.getLogger(__name__)

_RECV_BYTES = 256 * 1024
_DUMPS = pickle.dumps
_PROTOCOL = pickle.HIGHEST_PROTOCOL
# What a non-blocking socket raises when it has nothing to give or no room:
# an SSL socket raises its own (a TLS record may need a read to write, too).
_NOT_NOW = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)
# The answer to ``accept_connection``, as the stock server's ``conn.send`` makes it.
_ACCEPTED = ("#RETURN", None)

# A client that sends requests without reading the answers is no longer read
# once this much waits for it (answers its socket did not take, or requests
# behind its parked call), until half of it is gone: its own sends block when
# the socket buffers fill, and the server's memory stays bounded.
OUTBOX_HIGH = 1 << 20  # bytes
BACKLOG_HIGH = 1024  # requests


class ConnectionLoop:
    """Serves the adopted connections of one market on the calling thread (``run``).

    ``adopt`` may be called from any thread; everything else happens on the
    loop's thread, which serves as long as its process lives.
    """

    def __init__(
        self,
        market: Marketplace,
        *,
        max_request_size: int = DEFAULT_MAX_REQUEST_SIZE,
        shortages: Shortages | None = None,
    ) -> None:
        self.market = market
        self.max_request_size = max_request_size
        self.shortages = shortages if shortages is not None else Shortages()
        self.refused_requests = 0  # requests over max_request_size
        self.refused_payloads = 0  # requests off the allow-list
        self._selector = selectors.DefaultSelector()
        self._waker, self._kicker = socket.socketpair()
        self._waker.setblocking(False)
        self._kicker.setblocking(False)
        self._selector.register(self._waker, selectors.EVENT_READ, None)
        self._buffer = bytearray(_RECV_BYTES)
        self._view = memoryview(self._buffer)
        self._arrivals: deque[Client] = deque()
        self._woken: deque[Parked] = deque()
        self._deadlines: list[tuple[float, int, Parked]] = []
        self._order = itertools.count()  # ties between equal deadlines
        self._clients: set[Client] = set()
        self._thread_id: int | None = None
        self._woke = time.monotonic()  # when the selector last returned

    # -- any thread ------------------------------------------------------------

    def adopt(
        self,
        conn: connection.Connection,
        served: Served,
        on_close: Callable[[], None],
        describe: Callable[[], str] = lambda: "a client",
    ) -> None:
        """Serve an authenticated connection whose ``accept_connection`` waits for its answer.

        The loop answers it once the connection is registered, or closes it
        if it cannot be: either way ``on_close`` runs when it ends. Raises
        (and ``conn`` still owns its descriptor) if the connection cannot
        even be queued; it takes no new descriptor.
        """
        sock: socket.socket
        if isinstance(conn, TLSConnection):  # served through its SSL socket
            sock = conn.take_socket()
        else:
            sock = socket.socket(fileno=conn.fileno())
            take_handle(conn)  # the socket owns the descriptor now: no dup, no new one
        try:
            sock.setblocking(False)
            if sock.family in (socket.AF_INET, socket.AF_INET6):  # as asyncio does
                # An answer written while an earlier one is unacknowledged
                # (answers to pipelined requests, a large answer's last piece)
                # goes out now, not after the client's delayed ACK.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            framing = Framing(self.max_request_size)
            self._arrivals.append(Client(sock, served, on_close, describe, framing))
        except BaseException:
            sock.close()
            raise
        self._kick()

    def _kick(self) -> None:
        with contextlib.suppress(OSError):  # a wake-up is pending already, or stopped
            self._kicker.send(b"\0")

    # -- the loop's thread -----------------------------------------------------

    def run(self) -> None:
        """Serve for good: read, call, answer, and answer parked calls."""
        self._thread_id = threading.get_ident()
        precise_timers()  # timed-out calls answered on time (mpmarket.net.timing)
        select = PreciseSelect(self._selector)
        try:
            while True:
                events = select(self._timeout())
                self._woke = time.monotonic()  # what a call parked in this turn counts from
                for key, mask in events:
                    client = key.data
                    if client is None:  # a kick: arrivals, or parked calls woken elsewhere
                        self._drain_waker()
                        continue
                    try:
                        if mask & selectors.EVENT_WRITE:
                            self._flush(client)
                        if mask & selectors.EVENT_READ and not client.closed:
                            self._read(client)
                    except Exception as error:  # a bug must not take every client down
                        self._failed(error, "serving a connection failed; closing it")
                        self._close(client)
                try:
                    if self._arrivals:
                        self._take_arrivals()
                    if self._deadlines:
                        self._expire()
                    self._let_lapses_go()
                    if self._woken:
                        self._answer_woken()
                except Exception as error:  # the same: log it, keep serving the others
                    self._failed(error, "answering a parked call failed")
        finally:  # only an error of the loop itself gets here: hang up, never hang
            for client in list(self._clients):
                self._close(client)
            self._selector.close()
            self._waker.close()
            self._kicker.close()

    def _failed(self, error: Exception, what: str) -> None:
        """One line per episode for a resource that ran out; a traceback for a bug."""
        if resource_of(error) is not None:
            self.shortages.hit(error, "closing the connections that needed it")
        else:
            _log.exception(what)

    def _timeout(self) -> float | None:
        if self._woken or self._arrivals:
            return 0.0
        deadlines = self._deadlines
        while deadlines and deadlines[0][2].done:
            heapq.heappop(deadlines)
        due = deadlines[0][0] if deadlines else None
        lapse = self.market.next_lapse()
        if lapse is not None and (due is None or lapse < due):
            due = lapse
        if due is None:
            return None
        return max(0.0, due - time.monotonic())

    def _let_lapses_go(self) -> None:
        """Places kept for adds whose carts did not come back in time go to the next.

        Their wakes land in ``_woken``, answered next (``Marketplace.next_lapse``).
        """
        lapse = self.market.next_lapse()
        if lapse is not None and lapse <= time.monotonic():
            self.market.let_lapses_go()

    def _drain_waker(self) -> None:
        try:
            while self._waker.recv(4096):
                pass
        except OSError:  # drained (BlockingIOError), or nothing to drain
            pass

    def _take_arrivals(self) -> None:
        """Register new connections and answer their ``accept_connection``."""
        while self._arrivals:
            client = self._arrivals.popleft()
            try:
                self._selector.register(client.sock, selectors.EVENT_READ, client)
            except (OSError, MemoryError, ValueError) as error:  # epoll out of kernel memory
                client.events = 0
                self.shortages.hit(error, "connections refused until it comes back")
                self._close(client)  # refused before it was told it is in
                continue
            self._clients.add(client)
            self._answer(client, _ACCEPTED)
            self.shortages.ok()

    def _read(self, client: Client) -> None:
        """Read what the socket has; with TLS, what its SSL object holds too.

        Bytes an SSL socket decrypted but did not return yet (``pending()``)
        are in no kernel buffer: the selector would never report them. So
        they are read now, paused or not (at most the rest of one record).
        """
        self._read_once(client)
        sock = client.sock
        if isinstance(sock, ssl.SSLSocket):
            while not client.closed and sock.pending():
                self._read_once(client)

    def _read_once(self, client: Client) -> None:
        """Read what the socket has; serve every complete request in it, in order.

        Reads go into one buffer of the loop (a fresh 256 KiB object per read
        would cost a memory mapping each time); ``Framing`` cuts them into
        requests, linear in their size and bounded by ``max_request_size``.
        """
        framing = client.framing
        try:
            received = client.sock.recv_into(self._buffer, framing.want(len(self._buffer)))
        except _NOT_NOW:
            return
        except OSError:
            received = 0
        if not received:
            self._close(client)
            return
        discarding = framing.discard
        for message in framing.feed(self._view[:received]):
            if client.parked is None:
                self._serve(client, message)
                if client.closed:
                    return
            else:  # clients ask one thing at a time; keep the rest in order
                client.backlog.append(message)
        if framing.refused is not None and not discarding:
            self._refuse(client, framing.refused)
        elif discarding and not framing.discard:  # the refused request is read: hang up
            self._close(client)
        if client.outbox or client.backlog:
            self._watch(client)

    def _refuse(self, client: Client, size: int) -> None:
        """A request over the limit: an error to its sender alone, one line, hang up.

        Nothing of it is kept. Its sender is told why unless answers are
        still due to it (an answer out of turn would be taken for another
        call's); the rest of the request is read and dropped (up to
        ``DRAIN_MAX``) so that its send completes and it can read the answer.
        """
        self.refused_requests += 1
        limit = self.max_request_size
        _log.warning(
            "mpmarket: server refused a request of %s bytes from %s: over the limit of %s "
            "bytes (--max-request-size); its connection is closed",
            f"{size:,}",
            client.describe(),
            f"{limit:,}",
        )
        answerable = client.parked is None and not client.backlog and not client.outbox
        if answerable and size >= 0:
            self._answer(client, ("#ERROR", too_large(size, limit)))
        rest = client.framing.discard
        if not client.closed and (not answerable or not rest or rest > max(DRAIN_MAX, limit)):
            self._close(client)

    def _refuse_payload(self, client: Client, refusal: RefusedPayload) -> None:
        """A request off the allow-list: an error to its sender alone, one line, hang up.

        Nothing of it was built (``mpmarket.net.safe_pickle``). It is served in
        turn, so its answer is the next its sender reads.
        """
        self.refused_payloads += 1
        _log.warning(
            "mpmarket: server refused a request from %s: %s; its connection is closed",
            client.describe(),
            refusal,
        )
        self._answer(client, ("#ERROR", refused(refusal)))
        self._close(client)

    def _serve(self, client: Client, message: bytes | bytearray) -> None:
        """Run one request; answer it now unless it parked in the market."""
        try:
            ident, method, args, kwds = load_request(message)
            obj, exposed = client.served[ident]
            if method not in exposed:
                raise AttributeError(f"method {method!r} is not exposed by {ident!r}")
        except RefusedPayload as refusal:
            self._refuse_payload(client, refusal)
            return
        except InvalidArgumentError as error:  # a product of non-scalar fields, say
            self._answer(client, ("#ERROR", error))
            return
        except Exception:
            self._answer(client, ("#TRACEBACK", format_exc()))
            return
        waiting = WAITING_CALLS.get(method) if obj is self.market else None
        try:
            if waiting is None:
                answer = ("#RETURN", getattr(obj, method)(*args, **kwds))
            else:
                start, finish = waiting
                parked = Parked(self, client, finish)
                outcome = start(obj, parked.wake, *args, **kwds)
                if isinstance(outcome, (AddWait, PublishWait)):
                    self._park(parked, outcome)
                    answer = None
                else:
                    answer = ("#RETURN", outcome)
        except Exception as error:
            answer = ("#ERROR", error)
        if self._woken:  # calls this one completed are answered first
            self._answer_woken()
        if answer is not None:
            self._answer(client, answer)

    def _park(self, parked: Parked, wait: AddWait | PublishWait) -> None:
        parked.wait = wait
        parked.client.parked = parked
        # From when the loop woke to its request, not from when it got to it.
        deadline = self._woke + wait.timeout
        heapq.heappush(self._deadlines, (deadline, next(self._order), parked))
        # At most one parked call a client: past that, entries are answered ones.
        if len(self._deadlines) > 2 * len(self._clients) + 1024:
            self._deadlines = [entry for entry in self._deadlines if not entry[2].done]
            heapq.heapify(self._deadlines)

    def _expire(self) -> None:
        now = time.monotonic()
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            parked = heapq.heappop(deadlines)[2]
            if not parked.done:
                self._unpark(parked)

    def _answer_woken(self) -> None:
        woken = self._woken
        while woken:
            parked = woken.popleft()
            if not parked.done:
                self._unpark(parked)

    def _unpark(self, parked: Parked) -> None:
        """Finish a parked call in the market and answer it; then its client's backlog."""
        parked.done = True
        client = parked.client
        client.parked = None
        try:
            answer = ("#RETURN", parked.finish(self.market, parked.wait))
        except Exception as error:
            answer = ("#ERROR", error)
        if client.closed:
            return
        self._answer(client, answer)
        while client.backlog and client.parked is None and not client.closed:
            self._serve(client, client.backlog.popleft())
        if client.paused:
            self._watch(client)

    def _answer(self, client: Client, answer: tuple[str, Any]) -> None:
        try:
            payload = _DUMPS(answer, _PROTOCOL)
        except Exception:
            payload = _DUMPS(("#UNSERIALIZABLE", format_exc()), _PROTOCOL)
        self._write(client, header(len(payload)) + payload)

    def _write(self, client: Client, data: bytes) -> None:
        if client.outbox:  # still sending an earlier answer: keep the order
            client.outbox += data
            return
        try:
            sent = client.sock.send(data)
        except _NOT_NOW:  # an SSL socket takes all of it later, from the outbox
            sent = 0
        except OSError:
            self._close(client)
            return
        if sent < len(data):
            client.outbox += memoryview(data)[sent:]
            self._watch(client)

    def _flush(self, client: Client) -> None:
        try:
            sent = client.sock.send(client.outbox)
        except _NOT_NOW:
            return
        except OSError:
            self._close(client)
            return
        del client.outbox[:sent]
        if not client.outbox or client.paused:
            self._watch(client)

    def _watch(self, client: Client) -> None:
        """Read the client unless too much waits for it; write while answers wait."""
        if client.closed:
            return
        if client.paused:
            client.paused = (
                len(client.outbox) > OUTBOX_HIGH // 2 or len(client.backlog) > BACKLOG_HIGH // 2
            )
        else:
            client.paused = len(client.outbox) > OUTBOX_HIGH or len(client.backlog) > BACKLOG_HIGH
        events = (0 if client.paused else selectors.EVENT_READ) | (
            selectors.EVENT_WRITE if client.outbox else 0
        )
        if events == client.events:
            return
        if not client.events:
            self._selector.register(client.sock, events, client)
        elif not events:  # paused behind its parked call: its answer resumes it
            self._selector.unregister(client.sock)
        else:
            self._selector.modify(client.sock, events, client)
        client.events = events

    def _close(self, client: Client) -> None:
        """Forget a connection; a call it left parked ends now (its cart keeps its units)."""
        if client.closed:
            return
        client.closed = True
        self._clients.discard(client)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(client.sock)
        client.sock.close()
        parked = client.parked
        if parked is not None and not parked.done:
            self._unpark(parked)
        client.backlog.clear()
        client.on_close()
