"""docs/cli.md is generated from --help; it must say what the commands say."""

from __future__ import annotations

from pathlib import Path

from trailmap.cli.reference import render_reference

_PAGE = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def test_the_cli_reference_page_matches_the_commands_help() -> None:
    assert _PAGE.read_text(encoding="utf-8") == render_reference(), (
        "docs/cli.md is stale: run scripts/docs"
    )


def test_the_cli_reference_documents_every_command_of_the_interface() -> None:
    page = render_reference()
    for command in (
        "trailmap serve",
        "trailmap db upgrade",
        "trailmap db check",
        "trailmap org create",
        "trailmap user create",
        "trailmap key create",
        "trailmap key list",
        "trailmap key revoke",
        "trailmap send",
        "trailmap demo",
    ):
        assert f"## `{command}`" in page
