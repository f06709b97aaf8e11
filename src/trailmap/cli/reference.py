"""docs/cli.md, generated from the commands' own `--help` so the two cannot drift."""

from __future__ import annotations

import click

from trailmap.cli.main import cli

__all__ = ["render_reference"]

_HEADER = """\
# The `trailmap` command

Generated from `trailmap --help` by `scripts/docs`; a test fails when this page and the
commands disagree. The README has the quick start; this page has every option.
"""


def _sections(command: click.Command, name: str, parent: click.Context | None) -> list[str]:
    # make_context, as a real invocation does, so that settings such as -h/--help are inherited.
    ctx = command.make_context(name, [], parent=parent, resilient_parsing=True)
    ctx.terminal_width = 100
    with ctx:
        parts = [f"\n## `{ctx.command_path}`\n\n```text\n{command.get_help(ctx)}\n```\n"]
        if isinstance(command, click.Group):
            for sub in sorted(command.commands):
                parts.extend(_sections(command.commands[sub], sub, ctx))
    return parts


def render_reference() -> str:
    return _HEADER + "".join(_sections(cli, "trailmap", None))


if __name__ == "__main__":
    print(render_reference(), end="")
