"""check_deploy_policy and the violations query_events shows, through the official `mcp` SDK
client over a real server, on both databases."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from tests.factories import event
from tests.server import module_database, org_with_key, running_server

pytestmark = pytest.mark.anyio

_FREEZE = {
    "name": "Year-end freeze",
    "reason": "Holiday traffic",
    "environments": ["production"],
    "start": "2026-11-20T00:00:00Z",
    "end": "2027-01-04T00:00:00Z",
}


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path
) -> Iterator[tuple[str, str]]:
    """A server whose organization has a freeze and a deployment made during it: (URL, key)."""
    with module_database(request, tmp_path_factory, sqlite_template, "trailmap_guard") as (
        url,
        directory,
    ):
        admin = org_with_key(url, "acme", scope="admin")
        with running_server(url, log_path=directory / "server.log") as base_url:
            with httpx.Client(base_url=base_url) as http:
                auth = {"Authorization": f"Bearer {admin}"}
                made = http.post("/api/v1/guardrails/freezes", json=_FREEZE, headers=auth)
                assert made.status_code == 201, made.text
                sent = http.post(
                    "/api/v1/events",
                    json=event(id="during", time="2026-12-01T10:00:00Z"),
                    headers=auth,
                )
                assert sent.status_code == 201, sent.text
            yield base_url, admin


async def _call(served: tuple[str, str], tool: str, args: dict[str, Any]) -> Any:
    url, key = served
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {key}"})
    async with http, Client(streamable_http_client(url + "/mcp", http_client=http)) as client:
        return await client.call_tool(tool, args)


async def test_check_deploy_policy_names_the_freeze_with_its_window_and_reason(
    served: tuple[str, str],
) -> None:
    args = {"service": "checkout", "environment": "production", "time": "2026-12-24T10:00:00Z"}
    result = await _call(served, "check_deploy_policy", args)
    assert not result.is_error
    data = result.structured_content
    assert data["clear"] is False
    [violation] = data["violations"]
    assert violation["kind"] == "freeze"
    assert violation["window"]["end"] == "2027-01-04T00:00:00+00:00"
    text = result.content[0].text
    assert "Year-end freeze" in text
    assert "Holiday traffic" in text


async def test_check_deploy_policy_says_clear_outside_the_freeze(served: tuple[str, str]) -> None:
    args = {"service": "checkout", "environment": "staging"}
    result = await _call(served, "check_deploy_policy", args)
    assert result.structured_content["clear"] is True
    assert result.content[0].text.startswith("Clear")


async def test_a_bad_time_is_a_tool_error_the_model_reads(served: tuple[str, str]) -> None:
    result = await _call(served, "check_deploy_policy", {"service": "checkout", "time": "soon"})
    assert result.is_error
    assert "time" in result.content[0].text


async def test_query_events_shows_a_deployment_violations_compactly(
    served: tuple[str, str],
) -> None:
    result = await _call(served, "query_events", {"from": "2026-11-30", "to": "2026-12-02"})
    [shown] = result.structured_content["events"]
    [violation] = shown["violations"]
    assert set(violation) == {"kind", "message"}
    assert violation["kind"] == "freeze"
    assert "guardrail violations: freeze" in result.content[0].text
