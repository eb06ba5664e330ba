"""The group imports a command's module only when that command runs.

``mpmarket --version`` and ``mpmarket validate FILE`` run in a subprocess that
prints, at exit, every module it imported: neither may import the runner,
the views, the benchmarks or rich.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest

from mpmarket.cli.main import COMMANDS, cli

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "tea-and-coffee.toml"

# Runs the console script's main() with ARGS and writes sorted(sys.modules),
# as JSON, to stderr's last line, once the command has exited.
PROBE = """
import atexit, json, sys
atexit.register(lambda: print(json.dumps(sorted(sys.modules)), file=sys.stderr))
sys.argv = ["mpmarket", *sys.argv[1:]]
from mpmarket.cli.main import main
main()
"""

# What a light command must not import.
HEAVY = ("mpmarket.bench", "mpmarket.view", "mpmarket.run", "mpmarket.net", "rich")


def _imported(*args: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    ran = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=60
    )
    return ran, json.loads(ran.stderr.splitlines()[-1])


def _heavy(modules: list[str]) -> list[str]:
    return [name for name in modules if name.startswith(HEAVY)]


def test_version_imports_no_command():
    ran, modules = _imported("--version")
    assert ran.returncode == 0 and ran.stdout.startswith("mpmarket, version ")
    assert _heavy(modules) == []
    assert [name for name in modules if name.startswith("mpmarket.cli.")] == [
        "mpmarket.cli.exitcodes",
        "mpmarket.cli.main",
        "mpmarket.cli.output",
    ]


def test_validate_imports_only_its_own_command():
    ran, modules = _imported("validate", str(CONFIG))
    assert ran.returncode == 0, ran.stderr
    assert "ideal makespan" in ran.stdout
    assert _heavy(modules) == []
    assert "mpmarket.cli.validate" in modules
    assert "mpmarket.cli.run" not in modules and "mpmarket.cli.bench" not in modules


def test_a_command_that_runs_imports_its_module():
    ran, modules = _imported("simulate", str(CONFIG))
    assert ran.returncode == 0, ran.stderr
    assert "mpmarket.cli.simulate" in modules and "mpmarket.bench.measure" not in modules


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_name_loads_the_command_of_that_name(name):
    ctx = click.Context(cli, info_name="mpmarket")
    command = cli.get_command(ctx, name)
    assert isinstance(command, click.Command) and command.name == name


def test_help_lists_every_command():
    ctx = click.Context(cli, info_name="mpmarket")
    assert cli.list_commands(ctx) == sorted(COMMANDS)
    assert cli.get_command(ctx, "no-such-command") is None
