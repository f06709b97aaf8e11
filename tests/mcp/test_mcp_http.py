"""The MCP server over real HTTP, asked by the official `mcp` SDK client, as an assistant would."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from tests.factories import event
from tests.mcp.handshake import list_tools_in, open_session
from tests.server import module_database, org_with_key, running_server
from trailmap.accounts import create_key, list_keys, revoke_key
from trailmap.storage import Database

pytestmark = pytest.mark.anyio

TOOLS = {
    "get_organization_context",
    "query_events",
    "get_event",
    "get_event_summary",
    "list_event_types",
    "list_event_sources",
    "list_event_subjects",
}


@dataclass(frozen=True)
class Live:
    url: str
    db_url: str
    key_a: str
    key_b: str
    org_a: str


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path
) -> Iterator[Live]:
    with module_database(request, tmp_path_factory, sqlite_template, "trailmap_mcp") as (
        url,
        directory,
    ):
        key_a, key_b, org_a = org_with_key(url, "acme"), org_with_key(url, "globex"), "acme"
        with running_server(url, log_path=directory / "server.log") as base_url:
            _send_events(base_url, key_a, key_b)
            yield Live(url=base_url, db_url=url, key_a=key_a, key_b=key_b, org_a=org_a)


def _send_events(base_url: str, key_a: str, key_b: str) -> None:
    with httpx.Client(base_url=base_url) as http:
        auth_a, auth_b = {"Authorization": f"Bearer {key_a}"}, {"Authorization": f"Bearer {key_b}"}
        for i, (service, env) in enumerate(
            [("checkout", "production"), ("payments", "staging"), ("search", "production")]
        ):
            body = event(id=f"mcp-{i}", source=f"//github.com/acme/{service}", subject=env)
            sent = http.post("/api/v1/events", json=body, headers=auth_a)
            assert sent.status_code == 201, sent.text
        other = event(id="globex-1", source="//github.com/globex/secret", subject="prod")
        sent = http.post("/api/v1/events", json=other, headers=auth_b)
        assert sent.status_code == 201


async def _call(live: Live, key: str, tool: str, args: dict[str, Any], path: str = "/mcp") -> Any:
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {key}"})
    async with http, Client(streamable_http_client(live.url + path, http_client=http)) as client:
        return await client.call_tool(tool, args)


async def test_the_sdk_client_lists_every_timeline_tool_with_described_arguments(
    live: Live,
) -> None:
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {live.key_a}"})
    async with http, Client(streamable_http_client(live.url + "/mcp", http_client=http)) as client:
        listed = await client.list_tools()
    tools = {t.name: t for t in listed.tools}
    assert set(tools) >= TOOLS
    for tool in tools.values():
        assert tool.description, tool.name
        # One line of prose: a docstring's layout would only cost the model tokens.
        assert "\n" not in tool.description, tool.name
        assert "  " not in tool.description, tool.name
        assert tool.annotations is not None
        assert tool.annotations.read_only_hint is True
    schema = tools["query_events"].input_schema["properties"]
    assert "from" in schema
    assert "-2h" in schema["from"]["description"]
    assert schema["limit"]["maximum"] == 100
    assert "CRITICAL" in str(schema["severity"])
    assert "first" in (tools["get_organization_context"].description or "").lower()


async def test_query_events_answers_what_changed_in_production(live: Live) -> None:
    result = await _call(
        live, live.key_a, "query_events", {"from": "-2h", "subject": ["production"]}
    )
    assert not result.is_error, result.content
    services = [e["service"] for e in result.structured_content["events"]]
    assert sorted(services) == ["checkout", "search"]
    assert "checkout" in result.content[0].text


async def test_the_same_endpoint_answers_at_mcp_with_a_trailing_slash(live: Live) -> None:
    result = await _call(live, live.key_a, "list_event_subjects", {}, path="/mcp/")
    assert not result.is_error
    assert {r["value"] for r in result.structured_content["subjects"]} == {"production", "staging"}


async def test_another_organizations_key_sees_only_its_own_events(live: Live) -> None:
    result = await _call(live, live.key_b, "query_events", {"from": "-1d"})
    assert [e["event_id"] for e in result.structured_content["events"]] == ["globex-1"]


async def test_organization_context_names_types_environments_and_the_retention_window(
    live: Live,
) -> None:
    result = await _call(live, live.key_a, "get_organization_context", {"timezone": "Asia/Tokyo"})
    data = result.structured_content
    assert data["organization"] == live.org_a
    assert data["retention_days"] == 365
    assert data["timezone"] == "Asia/Tokyo"
    assert data["server_time"].endswith("+09:00")
    assert [t["value"] for t in data["event_types"]] == ["deployment"]


@pytest.mark.parametrize(
    ("args", "named"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"from": "now", "to": "-2h"}, "from"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"severity": ["HUGE"]}, "severity"),
        ({"from": "last tuesday-ish"}, "from"),
    ],
)
async def test_bad_arguments_give_a_tool_error_naming_the_argument(
    live: Live, args: dict[str, Any], named: str
) -> None:
    result = await _call(live, live.key_a, "query_events", args)
    assert result.is_error
    assert named in result.content[0].text


async def test_an_empty_answer_says_why(live: Live) -> None:
    result = await _call(live, live.key_a, "query_events", {"type": ["rollback"]})
    assert result.structured_content["events"] == []
    assert "No events of that kind" in result.structured_content["note"]


async def test_a_request_without_a_key_gets_401_naming_the_resource_metadata_and_scope(
    live: Live,
) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.post(
            live.url + "/mcp",
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            headers={"Accept": "application/json, text/event-stream"},
        )
    assert response.status_code == 401
    # The server's own port, not 8000: without TRAILMAP_PUBLIC_URL it follows --port.
    assert response.headers["www-authenticate"] == (
        f'Bearer resource_metadata="{live.url}/.well-known/oauth-protected-resource/mcp"'
        ', scope="read"'
    )


async def test_a_revoked_key_is_refused_on_the_very_next_call(live: Live) -> None:
    db = Database(live.db_url)
    try:
        org = live.org_a
        _key, token = await create_key(
            db, org, name="soon revoked", scope="READ_ONLY", created_by="tests"
        )
        http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
        async with http, Client(streamable_http_client(live.url + "/mcp", http_client=http)) as c:
            assert not (await c.call_tool("list_event_types", {})).is_error
            key = next(k for k in await list_keys(db, org) if k.name == "soon revoked")
            await revoke_key(db, key.id)
            with pytest.raises(Exception, match="error response"):
                await c.call_tool("list_event_types", {})
        async with httpx.AsyncClient() as raw:
            response = await raw.post(
                live.url + "/mcp",
                json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                headers={"Authorization": f"Bearer {token}"},
            )
        assert response.status_code == 401
        assert "revoked" in response.json()["error_description"]
    finally:
        db.close()


async def test_a_foreign_origin_is_refused_with_403(live: Live) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.post(
            live.url + "/mcp",
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            headers={
                "Authorization": f"Bearer {live.key_a}",
                "Origin": "https://evil.example",
                "Accept": "application/json, text/event-stream",
            },
        )
    assert response.status_code == 403


async def test_a_near_miss_url_names_the_right_one(live: Live) -> None:
    async with httpx.AsyncClient() as http:
        for path in ("/api/mcp", "/mcp/mcp", "/sse"):
            response = await http.get(live.url + path)
            assert response.status_code == 404
            assert "/mcp (Streamable HTTP" in response.json()["error"], path


async def test_a_session_taken_over_with_another_key_is_refused(live: Live) -> None:
    db = Database(live.db_url)
    try:
        _key, same_org_key = await create_key(
            db, live.org_a, name="colleague", scope="READ_ONLY", created_by="tests"
        )
    finally:
        db.close()
    async with httpx.AsyncClient() as http:
        url = live.url + "/mcp"
        session_id = await open_session(http, url, live.key_a)
        assert re.fullmatch(r"[\x21-\x7e]+", session_id)

        mine = await list_tools_in(http, url, live.key_a, session_id)
        assert mine.status_code == 200
        assert {t["name"] for t in mine.json()["result"]["tools"]} >= TOOLS

        for other in (live.key_b, same_org_key):
            taken = await list_tools_in(http, url, other, session_id)
            assert taken.status_code == 403
            assert "another API key" in taken.json()["error"]["message"]


async def test_a_session_id_this_server_did_not_issue_gets_404(live: Live) -> None:
    async with httpx.AsyncClient() as http:
        url = live.url + "/mcp"
        session_id = await open_session(http, url, live.key_a)
        nonce, tag, signature = session_id.split(".")
        for forged in (
            f"{nonce[::-1]}.{tag}.{signature}",
            f"{nonce}.{tag}.{signature[:-2]}",
            "made-up",
            "sessión-ünïcode".encode("latin-1"),
        ):
            refused = await list_tools_in(http, url, live.key_a, forged)
            assert refused.status_code == 404, forged
            assert "initialize" in refused.json()["error"]["message"]


async def test_each_session_gets_its_own_id(live: Live) -> None:
    async with httpx.AsyncClient() as http:
        ids = {await open_session(http, live.url + "/mcp", live.key_a) for _ in range(3)}
    assert len(ids) == 3


async def test_a_client_of_the_2026_protocol_gets_no_session(live: Live) -> None:
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {live.key_a}"})
    issued: list[str] = []

    async def record(response: httpx.Response) -> None:
        issued.extend(response.headers.get_list("mcp-session-id"))

    http.event_hooks["response"].append(record)
    async with http, Client(streamable_http_client(live.url + "/mcp", http_client=http)) as c:
        assert not (await c.call_tool("list_event_types", {})).is_error
    assert issued == []


def test_the_python_example_in_docs_connect_md_answers_what_changed(live: Live) -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "connect.md").read_text()
    (example,) = re.findall(r"```python\n(.*?)```", text, re.S)
    # Word for word, but for the server's address: this one listens on a free port.
    script = example.replace("http://127.0.0.1:8000", live.url)
    ran = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "TRAILMAP_API_KEY": live.key_a},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    assert "events from" in ran.stdout
    assert "checkout" in ran.stdout
