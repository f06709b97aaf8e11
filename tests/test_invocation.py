"""The commands Trailmap prints start with what runs this `trailmap` from where they are read."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from trailmap.invocation import command_prefix


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A checkout with its own `.venv/bin/trailmap` and `.venv/bin/python`."""
    bin_dir = tmp_path / "checkout" / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    for name in ("trailmap", "python"):
        (bin_dir / name).write_text("#!/bin/sh\n")
    return tmp_path / "checkout"


def test_trailmap_alone_when_the_path_finds_this_very_program(checkout: Path) -> None:
    script = checkout / ".venv" / "bin" / "trailmap"
    assert command_prefix(str(script), which=lambda _: str(script), cwd=checkout) == "trailmap"


def test_the_venvs_script_in_a_checkout_where_the_path_has_no_trailmap(checkout: Path) -> None:
    script = checkout / ".venv" / "bin" / "trailmap"
    prefix = command_prefix(str(script), which=lambda _: None, cwd=checkout)
    assert prefix == ".venv/bin/trailmap"


def test_the_venvs_script_when_the_path_finds_another_trailmap(
    checkout: Path, tmp_path: Path
) -> None:
    other = tmp_path / "elsewhere" / "trailmap"
    other.parent.mkdir()
    other.write_text("#!/bin/sh\n")
    script = checkout / ".venv" / "bin" / "trailmap"
    prefix = command_prefix(str(script), which=lambda _: str(other), cwd=checkout)
    assert prefix == ".venv/bin/trailmap"


def test_an_absolute_path_when_it_is_shorter_than_the_way_there(checkout: Path) -> None:
    script = checkout / ".venv" / "bin" / "trailmap"
    deep = checkout.parent.joinpath(*["x"] * 60)  # 60 times ../ is longer than the path
    deep.mkdir(parents=True)
    prefix = command_prefix(str(script), which=lambda _: None, cwd=deep)
    assert Path(prefix).is_absolute()
    assert Path(prefix) == script


def test_python_dash_m_when_started_as_a_module(checkout: Path) -> None:
    main = checkout / "src" / "trailmap" / "cli" / "main.py"
    python = checkout / ".venv" / "bin" / "python"
    prefix = command_prefix(str(main), which=lambda _: None, cwd=checkout, executable=str(python))
    assert prefix == ".venv/bin/python -m trailmap.cli.main"


def test_a_path_with_a_space_is_quoted_for_the_shell(tmp_path: Path) -> None:
    script = tmp_path / "my checkout" / ".venv" / "bin" / "trailmap"
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\n")
    prefix = command_prefix(str(script), which=lambda _: None, cwd=tmp_path / "my checkout")
    assert prefix == ".venv/bin/trailmap"
    root = Path("/")
    far = command_prefix(str(script), which=lambda _: None, cwd=root)
    assert far.startswith("'"), far
    assert [root / word for word in shlex.split(far)] == [script]


def test_the_printed_prefix_runs_trailmap_from_where_it_is_printed(tmp_path: Path) -> None:
    """Not a string game: the prefix this very test process would print, run by a shell in
    the same directory, is a working `trailmap`."""
    prefix = command_prefix(cwd=tmp_path, executable=sys.executable)
    done = subprocess.run(  # noqa: S602 - the point is what a shell makes of it
        f"{prefix} --version", shell=True, cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("trailmap, version")
