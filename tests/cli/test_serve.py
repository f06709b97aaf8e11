"""`trailmap serve`: where it listens is what OAuth, the links and the banner name; `/` leads
a person in; the banner says the one way to an account."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result

from tests.factories import make_org
from tests.server import running_server
from trailmap.accounts import add_user
from trailmap.cli.main import _public_url_note, _State, cli
from trailmap.invocation import command
from trailmap.settings import Settings
from trailmap.storage import Database

_METADATA = "/.well-known/oauth-protected-resource/mcp"


def _cli(database_url: str, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--database", database_url, *args])


def test_on_a_port_of_its_own_oauth_and_the_banner_name_that_port(
    database_url: str, tmp_path: Path
) -> None:
    """`running_server` starts `serve --port N` on a free port (never 8000), with no
    TRAILMAP_PUBLIC_URL."""
    log = tmp_path / "server.log"
    with running_server(database_url, log_path=log) as base, httpx.Client(base_url=base) as http:
        assert not base.endswith(":8000")
        metadata = http.get(_METADATA)
        assert metadata.status_code == 200, metadata.text
        assert metadata.json()["resource"] == f"{base}/mcp"
        assert [url.rstrip("/") for url in metadata.json()["authorization_servers"]] == [base]
        unauthenticated = http.post(
            "/mcp",
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            headers={"Accept": "application/json, text/event-stream"},
        )
        assert unauthenticated.status_code == 401
        challenge = unauthenticated.headers["www-authenticate"]
        assert f'resource_metadata="{base}{_METADATA}"' in challenge
        # `/` leads a person to sign in (to the console once signed in: tests/console).
        root = http.get("/", follow_redirects=False)
        assert (root.status_code, root.headers["location"]) == (303, "/login")
        # A command run beside it prints links to it, though nothing told it the port.
        assert _cli(database_url, "org", "create", "acme").exit_code == 0
        created = _cli(database_url, "user", "create", "new@example.com", "--org", "acme")
        assert created.exit_code == 0, created.output
        assert created.stdout.startswith(f"{base}/reset/"), created.output
    banner = log.read_text()
    assert f"Console:   {base}/console" in banner
    assert f"MCP:       {base}/mcp" in banner
    # First start: the one-time link names the port too, and says what comes next.
    assert re.search(rf"{re.escape(base)}/setup\?token=[\w-]{{43}}\n", banner), banner
    assert f"Then sign in at {base}/login" in banner
    assert "TRAILMAP_PUBLIC_URL" not in banner


def test_a_public_url_elsewhere_is_what_oauth_names_and_the_banner_says_so(
    database_url: str, db: Database, tmp_path: Path
) -> None:
    async def someone() -> None:
        await make_org(db, slug="acme")
        await add_user(db, "ada@example.com", org_slug="acme", password="correct horse battery")

    asyncio.run(someone())
    log = tmp_path / "server.log"
    public = "https://trailmap.example"
    env = {"TRAILMAP_PUBLIC_URL": public}
    with (
        running_server(database_url, log_path=log, env=env) as base,
        httpx.Client(base_url=base) as http,
    ):
        assert http.get(_METADATA).json()["resource"] == f"{public}/mcp"
    lines = log.read_text().splitlines()
    note = [line for line in lines if "TRAILMAP_PUBLIC_URL" in line]
    assert note == [
        (
            f"  Public URL {public} (TRAILMAP_PUBLIC_URL) is not where this server listens "
            f"({base}): OAuth and links name it, so it must lead here."
        )
    ]
    # Someone has an account: no setup link, but the way in.
    assert not any("/setup?token=" in line for line in lines)
    # An existing account added to another organization is told where to sign in.
    assert _cli(database_url, "org", "create", "beta").exit_code == 0
    added = _cli(database_url, "user", "create", "ada@example.com", "--org", "beta")
    assert f"ada@example.com signs in with their own password at {public}/login" in added.stderr
    way_in = lines.index(f"  Sign in at {public}/login. To add an account to an organization:")
    assert lines[way_in + 1] == f"    {command('user create you@example.com --org SLUG')}"


def test_trailmap_host_and_port_set_where_it_listens_and_the_public_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TRAILMAP_PUBLIC_URL", raising=False)
    monkeypatch.setenv("TRAILMAP_HOST", "::1")
    monkeypatch.setenv("TRAILMAP_PORT", "8101")
    settings = _State(None).settings()
    assert (settings.host, settings.port) == ("::1", 8101)
    assert settings.public_url == "http://[::1]:8101"
    # --host and --port override them, and the public URL follows.
    flags = _State(None).settings(host="127.0.0.1", port=9000)
    assert (flags.host, flags.port, flags.public_url) == (
        "127.0.0.1",
        9000,
        "http://127.0.0.1:9000",
    )
    assert _public_url_note(flags) is None


def test_the_defaults_are_loopback_port_8000(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TRAILMAP_HOST", "TRAILMAP_PORT", "TRAILMAP_PUBLIC_URL"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert (settings.host, settings.port, settings.public_url) == (
        "127.0.0.1",
        8000,
        "http://127.0.0.1:8000",
    )


@pytest.mark.parametrize("wildcard", ["0.0.0.0", "::"])  # noqa: S104 - parsed, never bound
def test_on_every_address_oauth_names_loopback_and_the_banner_says_what_to_set(
    monkeypatch: pytest.MonkeyPatch, wildcard: str
) -> None:
    monkeypatch.delenv("TRAILMAP_PUBLIC_URL", raising=False)
    settings = _State(None).settings(host=wildcard, port=8101)
    assert settings.public_url == "http://127.0.0.1:8101"
    note = _public_url_note(settings)
    assert note is not None
    assert "set TRAILMAP_PUBLIC_URL to the URL other machines use" in note
    # Set, it is believed: nothing to say.
    monkeypatch.setenv("TRAILMAP_PUBLIC_URL", "http://build-box:8101")
    told = _State(None).settings(host=wildcard, port=8101)
    assert told.public_url == "http://build-box:8101"
    assert "is not where this server listens" in (_public_url_note(told) or "")


def test_user_create_for_the_demo_prints_a_command_that_runs_here() -> None:
    assert command("user create you@example.com --org demo").endswith(
        " user create you@example.com --org demo"
    )
