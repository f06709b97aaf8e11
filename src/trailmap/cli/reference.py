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


def _walk(command: click.Command, path: list[str]) -> list[tuple[list[str], click.Command]]:
    found = [(path, command)]
    if isinstance(command, click.Group):
        for name in sorted(command.commands):
            found.extend(_walk(command.commands[name], [*path, name]))
    return found


def render_reference() -> str:
    parts = [_HEADER]
    for path, command in _walk(cli, ["trailmap"]):
        with click.Context(command, info_name=" ".join(path), terminal_width=100) as ctx:
            text = command.get_help(ctx)
        parts.append(f"\n## `{' '.join(path)}`\n\n```text\n{text}\n```\n")
    return "".join(parts)


if __name__ == "__main__":
    print(render_reference(), end="")
