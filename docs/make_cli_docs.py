"""Make docs/cli.md, the command-line reference, from the click commands themselves.

Every command's ``--help``, as a terminal of 80 columns or more shows it
(click wraps help at 78 columns there), under a heading of its own: the
group first, then each command in the order ``mpmarket --help`` lists them,
a group's subcommands after it. tests/cli/test_cli_docs.py fails when the
file is not what this script writes.

    .venv/bin/python docs/make_cli_docs.py          # write docs/cli.md
    .venv/bin/python docs/make_cli_docs.py --check  # exit 1 if it is out of date
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

import click

from mpmarket.cli.main import cli

OUTPUT = Path(__file__).resolve().parent / "cli.md"

# click's help width on any terminal of 80 columns or more: the file does not
# depend on the terminal that made it.
HELP_WIDTH = 78

HEADER = """\
# The command line

Every `mpmarket` command and its `--help`, word for word. This page is
generated from the click commands by `docs/make_cli_docs.py`: do not edit it,
run the script (`tests/cli/test_cli_docs.py` fails when the page is out of
date). The exit codes are the same for every command; each help ends with
them.
"""


def _commands(
    command: click.Command, ctx: click.Context
) -> Iterator[tuple[click.Command, click.Context]]:
    """The command and, for a group, each of its subcommands in listing order."""
    yield command, ctx
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is None or sub.hidden:
                continue
            sub_ctx = sub.make_context(name, [], parent=ctx, resilient_parsing=True)
            yield from _commands(sub, sub_ctx)


def _anchor(title: str) -> str:
    """GitHub's anchor of a heading of words and dashes."""
    return title.lower().replace(" ", "-")


def render() -> str:
    """docs/cli.md's text."""
    root = cli.make_context("mpmarket", [], resilient_parsing=True, terminal_width=HELP_WIDTH)
    entries = list(_commands(cli, root))
    lines = [HEADER]
    for command, ctx in entries[1:]:
        title = ctx.command_path
        summary = command.get_short_help_str(limit=HELP_WIDTH)
        lines.append(f"- [`{title}`](#{_anchor(title)}): {summary}")
    for _, ctx in entries:
        lines += ["", f"## {ctx.command_path}", "", "```text", ctx.get_help(), "```"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/cli.md is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
        if current != text:
            print(f"{OUTPUT} is out of date: run {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
