"""Start methods and the process contexts of runs and benchmarks, chosen in one place."""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Mapping
from multiprocessing.context import BaseContext

__all__ = [
    "START_METHODS",
    "START_METHOD_ENV_VAR",
    "available_start_methods",
    "default_start_method",
    "platform_start_method",
    "process_context",
    "shown_value",
    "start_method_from_env",
]

START_METHODS = ("fork", "forkserver", "spawn")

# The environment variable that picks the start method when none is given.
START_METHOD_ENV_VAR = "MPMARKET_START_METHOD"


def shown_value(value: str) -> str:
    """A value read from the environment, for a message: quoted, its odd bytes escaped.

    ``os.environ`` holds bytes that are not UTF-8 as lone surrogates; they are
    shown as the bytes they were.
    """
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return f"{os.fsencode(value)!r} (not UTF-8)"
    return repr(value)


def platform_start_method() -> str:
    """fork where it exists (fast start-up), else spawn."""
    return "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"


def available_start_methods() -> tuple[str, ...]:
    """The start methods of ``START_METHODS`` this platform has."""
    methods = multiprocessing.get_all_start_methods()
    return tuple(method for method in START_METHODS if method in methods)


def start_method_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    """The start method $MPMARKET_START_METHOD names; None when it is unset or empty.

    ValueError, with one line naming the variable and what it may hold, when
    it names none of this platform's start methods (a typo used to be ignored).
    """
    value = (os.environ if environ is None else environ).get(START_METHOD_ENV_VAR)
    if not value:
        return None
    methods = available_start_methods()
    if value not in methods:
        raise ValueError(
            f"${START_METHOD_ENV_VAR}: expected one of {', '.join(methods)}, "
            f"got {shown_value(value)}"
        )
    return value


def default_start_method() -> str:
    """$MPMARKET_START_METHOD, else ``platform_start_method()``; ValueError if the variable is bad."""
    return start_method_from_env() or platform_start_method()


def process_context(start_method: str | None = None) -> BaseContext:
    """The multiprocessing context of a run's processes (default: ``default_start_method``).

    Under forkserver, the fork server first imports the mpmarket modules this
    process has: without them every agent imported mpmarket (and, started from
    the command line, click and rich) again, about 85 ms each, one after the
    other (case 10 of the course took 23.6 s to start instead of 0.5 s).
    """
    ctx = multiprocessing.get_context(start_method or default_start_method())
    if ctx.get_start_method() == "forkserver":
        ours = sorted(name for name in sys.modules if name.partition(".")[0] == "mpmarket")
        ctx.set_forkserver_preload(ours)
    return ctx
