"""The README's path, as a newcomer walks it: `trailmap demo`, then `serve --demo` on a port of
its own with no TRAILMAP_PUBLIC_URL; the setup link the banner prints makes the first owner,
who owns the demo too; an assistant (the `mcp` SDK's OAuth client, registering as Claude
Code does) signs in to the demo over OAuth and asks a seed question. Nothing is set by hand
that the README does not say."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from tests import databases
from tests.oauth.browser import Browser
from tests.oauth.conftest import OWNER, PASSWORD
from tests.oauth.test_oauth_flow import MemoryStorage, User, _client_metadata
from tests.server import running_server

pytestmark = pytest.mark.anyio


@pytest.fixture
def demo_database(tmp_path: Path, sqlite_template: Path) -> str:
    """A fresh database with `trailmap demo` run on it, as the README's first command does."""
    url = databases.copy_sqlite(sqlite_template, tmp_path / "trailmap.db")
    command = [sys.executable, "-m", "trailmap.cli.main", "--database", url, "demo"]
    loaded = subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)
    assert loaded.returncode == 0, loaded.stderr
    return url


async def test_a_newcomer_signs_up_from_the_banner_and_connects_an_assistant_over_oauth(
    demo_database: str, tmp_path: Path
) -> None:
    url = demo_database
    log = tmp_path / "server.log"
    env = {"TRAILMAP_OAUTH_REGISTRATIONS_PER_HOUR": "0"}
    with running_server(url, log_path=log, env=env, args=("--demo",)) as base:
        assert not base.endswith(":8000")
        found = re.search(rf"{re.escape(base)}/setup\?token=[\w-]+", log.read_text())
        assert found, log.read_text()
        browser = Browser()
        try:
            form = await browser.get(found.group(0))
            assert "demo" in form.text  # the form says the account will own the demo too
            fields = {"organization": "acme", "name": "Acme", "email": OWNER}
            made = await browser.submit(form, {**fields, "password": PASSWORD})
            assert made.status_code == 201, made.text
            assert "You are an owner of <b>acme</b>, <b>demo</b>" in made.text
            assert f"<code>{base}/mcp</code>" in made.text

            person = User(Browser(), organization="demo")
            provider = OAuthClientProvider(
                server_url=f"{base}/mcp",
                client_metadata=_client_metadata("http://127.0.0.1:53682/callback", "Claude Code"),
                storage=MemoryStorage(),
                redirect_handler=person.redirect,
                callback_handler=person.callback,
            )
            http = create_mcp_http_client(auth=provider)
            transport = streamable_http_client(f"{base}/mcp", http_client=http)
            async with http, Client(transport) as assistant:
                answer = await assistant.call_tool("query_events", {"from": "-2h"})
            await person.browser.aclose()
        finally:
            await browser.aclose()
    assert person.authorizations == 1
    assert not answer.is_error, answer.content
    assert answer.structured_content is not None
    assert "deployment" in {e["type"] for e in answer.structured_content["events"]}
