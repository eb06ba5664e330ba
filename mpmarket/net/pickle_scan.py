"""What a pickle would hash while it is read: found before it is read.

The C unpickler hashes a dict's keys and a set's items as it reads them
(``SETITEM``, ``SETITEMS``, ``DICT``, ``ADDITEMS``, ``FROZENSET``), before
any check of ``mpmarket.net.safe_pickle`` could look: a tuple shared with
itself 40 levels deep (70 bytes of pickle) hashes 2**40 times, one a million
deep overflows the C stack. ``hashes_a_container`` reads a pickle opcode by
opcode first, at C speed where it can (a regex of every opcode and its
argument, built from ``pickletools``' table), and follows its stack where a
hashing opcode is there.
"""

from __future__ import annotations

import pickletools
import re

__all__ = ["NO_HASHING", "hashes_a_container"]

# The opcodes whose reading hashes what is on the stack (a dict's keys, a
# set's items), in the C unpickler, before any check of ours could look.
_HASHING = frozenset({"SETITEM", "SETITEMS", "DICT", "ADDITEMS", "FROZENSET"})
# What pickletools says an opcode pushes, when it is cheap to hash: a scalar.
_SCALAR_KINDS = frozenset(
    {
        pickletools.pyint,
        pickletools.pylong,
        pickletools.pyinteger_or_bool,
        pickletools.pybool,
        pickletools.pyfloat,
        pickletools.pybytes_or_str,
        pickletools.pystring,
        pickletools.pybytes,
        pickletools.pyunicode,
        pickletools.pynone,
    }
)
_HASHING_BYTES = re.compile(rb"[sud\x90\x91]")


def _no_hashing_pattern() -> re.Pattern[bytes]:
    """Pickles read opcode by opcode, with none that hashes (C speed, exact).

    Each opcode with its argument, as the unpickler reads it: fixed sizes,
    lines, and strings of a 1-byte length (each length its own branch, so
    that a string's bytes are never taken for opcodes). Strings of a 4- or
    8-byte length are not matched: such pickles go to the opcode scan.
    """
    plain: list[bytes] = []
    others: list[bytes] = []
    for opcode in pickletools.opcodes:
        if opcode.name in _HASHING:
            continue
        code = re.escape(opcode.code.encode("latin-1"))
        argument = opcode.arg
        if argument is None:
            plain.append(code)
        elif argument.n >= 0:
            others.append(code + rb"[\s\S]{%d}" % argument.n)
        elif argument.n == pickletools.UP_TO_NEWLINE:
            lines = 2 if argument.name == "stringnl_noescape_pair" else 1
            others.append(code + rb"[^\n]*\n" * lines)
        elif argument.n == pickletools.TAKEN_FROM_ARGUMENT1:
            sized = (re.escape(bytes([n])) + rb"[\s\S]{%d}" % n for n in range(256))
            others.append(code + rb"(?:" + b"|".join(sized) + rb")")
    # The frequent first: short strings, small ints, memo gets, floats.
    first = {b"\x8c": 0, b"K": 1, b"h": 2, b"G": 3, b"M": 4, b"J": 5}
    others.sort(key=lambda token: first.get(token[:2].lstrip(b"\\")[:1], 9))
    return re.compile(rb"(?:[" + b"".join(plain) + rb"]|" + b"|".join(others) + rb")*+")


NO_HASHING = _no_hashing_pattern()
_MEMO_PUTS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_MEMO_GETS = frozenset({"GET", "BINGET", "LONG_BINGET"})


def hashes_a_container(data: bytes) -> bool:
    """True if reading ``data`` would hash anything but a scalar (a dict key, a set item).

    The C unpickler hashes those as it reads: a tuple shared with itself 40
    levels deep (a 70-byte pickle) hashes 2**40 times, one a million deep
    overflows the C stack. The protocol's dict keys are strings (a call's
    keyword names) and it sends no sets, so a pickle that would hash a
    container is refused before it is read. This follows the pickle's stack
    as ``pickletools`` describes each opcode, scalars apart from the rest
    (through the memo, ``DUP`` and marks). A malformed pickle is left to the
    unpickler, which refuses it. About 10 us for a request of 100 bytes;
    only what no memo holds is scanned.
    """
    if not _HASHING_BYTES.search(data) or NO_HASHING.fullmatch(data):
        return False  # no such opcode (nor a byte like one), or none read as an opcode
    stack: list[bool] = []  # True: a scalar, cheap to hash
    marks: list[int] = []
    memo: dict[int, bool] = {}
    try:
        for opcode, argument, _ in pickletools.genops(data):
            name = opcode.name
            if name == "MARK":
                marks.append(len(stack))
                continue
            if name in _MEMO_PUTS or name in _MEMO_GETS:
                if not isinstance(argument, int):
                    return False  # malformed
                if name in _MEMO_PUTS:
                    memo[argument] = stack[-1]
                else:
                    stack.append(memo[argument])
                continue
            if name == "MEMOIZE":
                memo[len(memo)] = stack[-1]
                continue
            if name == "DUP":
                stack.append(stack[-1])
                continue
            before = opcode.stack_before
            if pickletools.markobject in before:
                start = marks.pop()
                items = stack[start:]
                del stack[start:]
                if name in _HASHING and not all(
                    items if name in ("ADDITEMS", "FROZENSET") else items[0::2]
                ):
                    return True
                del stack[len(stack) - before.index(pickletools.markobject) :]
            else:
                if name == "SETITEM" and not stack[-2]:
                    return True
                if before:
                    del stack[-len(before) :]
            stack += [kind in _SCALAR_KINDS for kind in opcode.stack_after]
    except (ValueError, IndexError, KeyError):  # malformed: the unpickler says how
        return False
    return False
