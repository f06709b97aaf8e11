"""How to run `trailmap` from here: every command Trailmap prints for a person to type (the
serve banner, `user create`, the console's pages) starts with `command_prefix()`, so it
works where it is printed: `trailmap` when that is on the PATH and is this very program,
else the path of the running entry point (`.venv/bin/trailmap` in a checkout), or
`python -m trailmap.cli.main` when that is how it was started."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

__all__ = ["command", "command_prefix"]

_MODULE = "trailmap.cli.main"


def command(words: str) -> str:
    """`words` (such as "user create you@example.com --org demo") as a command to type here."""
    return f"{command_prefix()} {words}"


def command_prefix(
    argv0: str | None = None,
    *,
    which: Callable[[str], str | None] = shutil.which,
    cwd: Path | None = None,
    executable: str | None = None,
) -> str:
    """The shortest way to start this `trailmap` from `cwd`: the defaults are this process's
    own (`sys.argv[0]`, the PATH, the working directory, `sys.executable`)."""
    script = Path(sys.argv[0] if argv0 is None else argv0)
    here = Path.cwd() if cwd is None else cwd
    if script.name == "trailmap":
        found = which("trailmap")
        if found is not None and _same_file(Path(found), here / script):
            return "trailmap"
        return shlex.quote(_shortest(here / script, here))
    python = Path(sys.executable if executable is None else executable)
    return f"{shlex.quote(_shortest(python, here))} -m {_MODULE}"


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return False


def _shortest(path: Path, cwd: Path) -> str:
    """`path` relative to `cwd` when that is shorter (`.venv/bin/trailmap`), else absolute;
    a relative path to a file in `cwd` itself gets `./`, or a shell would search the PATH."""
    # Not resolved: .venv/bin/python is a link to the system's Python, and must stay the link.
    absolute = Path(os.path.normpath(cwd / path))
    try:
        relative = os.path.relpath(absolute, cwd)
    except ValueError:  # another drive (Windows)
        return str(absolute)
    if len(relative) >= len(str(absolute)):
        return str(absolute)
    return relative if os.sep in relative else f".{os.sep}{relative}"
