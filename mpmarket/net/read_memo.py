"""A memo of what was read, by what it was read from: bounded, shared by threads.

Agents send the same few requests over and over and get the same few
answers: looking the bytes up costs less than reading them again
(``mpmarket.net.safe_pickle`` keeps one per process and use).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

__all__ = ["MEMO_MESSAGE_BYTES", "REPLY_MEMO_SIZE", "REQUEST_MEMO_SIZE", "ReadMemo"]

# How many different requests the server remembers having read, how many
# answers and products a client does, and the largest message remembered, in
# bytes. A request of the course's workloads is 60 to 120 bytes, an answer 20
# to 40 (an order of a few products about 150); an agent process saw at most
# 156 different answers in a 16x32 churn: the memos hold what the agents send
# and get over and over, at most a few hundred kB (``ReadMemo``).
REQUEST_MEMO_SIZE = 4096
REPLY_MEMO_SIZE = 1024
MEMO_MESSAGE_BYTES = 256

_K = TypeVar("_K", bound=Hashable)
_V = TypeVar("_V")


class ReadMemo(Generic[_K, _V]):
    """What was read, by what it was read from: at most ``size`` entries.

    Emptied when full (a workload with more different messages than that
    reads them as without a memo, and no slower). One per process and use,
    shared by its threads: a ``dict``'s ``get`` and item assignment are
    atomic in CPython, and a value is the same whoever read it first.
    """

    __slots__ = ("_read", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self._read: dict[_K, _V] = {}

    def get(self, key: _K) -> _V | None:
        """What ``key`` was read as, or None."""
        return self._read.get(key)

    def keep(self, key: _K, value: _V) -> None:
        if len(self._read) >= self.size:
            self._read.clear()
        self._read[key] = value

    def __len__(self) -> int:
        return len(self._read)
