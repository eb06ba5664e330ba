"""Every float option of every command takes finite numbers only.

``nan`` passes every comparison of ``click.FloatRange`` and ``inf`` every
lower bound, so ``gen --make-time nan`` wrote a workload of ``nan`` times and
``serve --cart-lease nan`` leased carts for ever. Each option is found by
walking the command tree (an option added later is checked too), then
refused through the real command line.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import click
import pytest

from mpmarket.cli.main import cli
from mpmarket.cli.options import FiniteFloat

USAGE = 2


def _float_options() -> Iterator[tuple[tuple[str, ...], str, click.ParamType]]:
    """(command path, option name, its type) of every float option."""

    def walk(
        command: click.Command, path: tuple[str, ...]
    ) -> Iterator[tuple[tuple[str, ...], str, click.ParamType]]:
        if isinstance(command, click.Group):
            with click.Context(command) as ctx:
                for name in command.list_commands(ctx):
                    sub = command.get_command(ctx, name)
                    assert sub is not None
                    yield from walk(sub, (*path, name))
            return
        for param in command.params:
            if isinstance(param, click.Option) and isinstance(
                param.type, click.types.FloatParamType
            ):
                yield path, max(param.opts, key=len), param.type

    yield from walk(cli, ())


FLOAT_OPTIONS = list(_float_options())


def test_every_float_option_is_finite():
    assert len(FLOAT_OPTIONS) >= 10  # gen, run, serve, stress, bench...: the walk found them
    for path, option, kind in FLOAT_OPTIONS:
        assert isinstance(kind, FiniteFloat), (path, option, kind)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
@pytest.mark.parametrize(
    ("path", "option"), [(path, option) for path, option, _ in FLOAT_OPTIONS], ids=str
)
def test_a_float_option_refuses_what_is_no_number(path, option, value):
    result = subprocess.run(
        [sys.executable, "-m", "mpmarket", *path, f"{option}={value}"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    assert result.returncode == USAGE, result.stderr
    assert "Traceback" not in result.stderr
    assert option in result.stderr and value in result.stderr
    assert result.stdout == ""
