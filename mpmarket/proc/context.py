"""Start methods and the process contexts of runs and benchmarks, chosen in one place."""

from __future__ import annotations

import multiprocessing
import os
import sys
from multiprocessing.context import BaseContext

__all__ = ["START_METHODS", "default_start_method", "process_context"]

START_METHODS = ("fork", "forkserver", "spawn")


def default_start_method() -> str:
    """$MPMARKET_START_METHOD, else fork where it exists (fast start-up), else spawn."""
    methods = multiprocessing.get_all_start_methods()
    chosen = os.environ.get("MPMARKET_START_METHOD")
    if chosen in methods and chosen in START_METHODS:
        return chosen
    return "fork" if "fork" in methods else "spawn"


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
