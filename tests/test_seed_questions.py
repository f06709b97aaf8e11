"""The nine seed questions, asked of the demo organization the way an assistant asks them: one
MCP session (the official `mcp` client) per question, its tool calls counted. Each is answered
in at most three calls, and a change is listed once however many producers reported it.

"At any hour": the demo is served as the README says, by `serve --demo`, whose shop keeps
running; its live schedule (tests/test_demo_live.py) keeps a deployment in any two hours and
from midnight on, and a change in any hour. Here the questions are asked at whatever hour the
suite runs, and the schedule tests below check every minute of three days.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from tests.demo import serve_demo
from trailmap.demo.live import live_changes
from trailmap.demo.traces import SERVICES

pytestmark = pytest.mark.anyio

MAX_CALLS = 3


@pytest.fixture(scope="module")
def demo_server(
    tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path
) -> Iterator[tuple[str, str]]:
    """This module's own demo, served live (the session's shared one is not: its changes stop
    where it was loaded, which may be long before these questions in a whole run)."""
    with serve_demo(tmp_path_factory.mktemp("live-demo"), sqlite_template, live=True) as server:
        yield server


class Assistant:
    """One MCP session with the demo, counting the tool calls a question takes."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self.calls = 0

    async def ask(self, tool: str, args: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        result = await self._client.call_tool(tool, args)
        assert not result.is_error, (tool, args, result.content)
        answer: dict[str, Any] | None = result.structured_content
        assert answer is not None
        return answer


@asynccontextmanager
async def question(server: tuple[str, str]) -> AsyncIterator[Assistant]:
    base, key = server
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {key}"})
    async with http, Client(streamable_http_client(f"{base}/mcp", http_client=http)) as client:
        assistant = Assistant(client)
        yield assistant
    assert 1 <= assistant.calls <= MAX_CALLS, assistant.calls


def once_per_change(events: list[dict[str, Any]]) -> None:
    """No change listed twice: CI's report and the traces' detection are one entry."""
    keys = [(e["type"], e.get("service"), e.get("version"), e["time"]) for e in events]
    assert len(set(keys)) == len(keys), keys
    versions = [(e.get("service"), e["version"]) for e in events if e.get("version")]
    assert len(set(versions)) == len(versions), versions
    assert not [e for e in events if e["source"].startswith("otel://")]


async def test_what_was_deployed_today(demo_server: tuple[str, str]) -> None:
    async with question(demo_server) as assistant:
        answer = await assistant.ask("query_events", {"from": "today", "type": "deployment"})
    deployments = answer["events"]
    assert deployments, answer
    assert {e["type"] for e in deployments} == {"deployment"}
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    assert all(datetime.fromisoformat(e["time"]) >= midnight for e in deployments)
    once_per_change(deployments)


async def test_what_changed_in_the_last_two_hours(demo_server: tuple[str, str]) -> None:
    async with question(demo_server) as assistant:
        answer = await assistant.ask("query_events", {"from": "-2h"})
    changes = answer["events"]
    assert "deployment" in {e["type"] for e in changes}, answer
    once_per_change(changes)


async def test_recent_events_in_production(demo_server: tuple[str, str]) -> None:
    async with question(demo_server) as assistant:
        # As a person says it: "prod", which the demo calls "production".
        answer = await assistant.ask("query_events", {"subject": "prod"})
        if not answer["events"]:
            # The empty answer names the environment that exists; the model asks again.
            assert "production" in str(answer.get("hint") or answer.get("note")), answer
            answer = await assistant.ask("query_events", {"subject": "production"})
    events = answer["events"]
    assert events
    assert {e["subject"] for e in events} == {"production"}
    once_per_change(events)


async def test_did_the_error_rate_change_after_the_last_deployment(
    demo_server: tuple[str, str],
) -> None:
    async with question(demo_server) as assistant:
        found = await assistant.ask("query_events", {"type": "deployment", "limit": 1})
        (last,) = found["events"]
        answer = await assistant.ask("get_metrics_around_event", {"event_id": last["id"]})
    (error_rate,) = [m for m in answer["metrics"] if m["name"] == "error_rate"]
    assert error_rate["source"] == "spans"
    age = datetime.now(UTC) - datetime.fromisoformat(last["time"])
    if error_rate["verdict"] == "not enough data":
        # Only a release of the last minutes lacks the points after it, and says so.
        assert age < timedelta(minutes=30), (last, error_rate)
    else:
        assert error_rate["verdict"] in {"increased", "decreased", "no significant change"}
        assert 0 <= error_rate["p_value"] <= 1


async def test_how_requests_flow_from_the_api_gateway_to_the_database(
    demo_server: tuple[str, str],
) -> None:
    async with question(demo_server) as assistant:
        answer = await assistant.ask("find_path", {"from": "API gateway", "to": "the database"})
    (first, *_) = answer["paths"]
    assert first["nodes"][0] == "api-gateway"
    assert first["nodes"][-1] == "postgresql"
    assert all(edge.get("calls_per_minute") for edge in first["edges"])


async def test_which_services_connect_to_postgresql(demo_server: tuple[str, str]) -> None:
    async with question(demo_server) as assistant:
        answer = await assistant.ask("search_nodes", {"query": "postgres"})
    (database, *_) = answer["nodes"]
    assert (database["name"], database["kind"]) == ("postgresql", "database")
    assert database["connected_services"] == ["inventory", "orders"]


async def test_what_breaks_if_payments_goes_down(demo_server: tuple[str, str]) -> None:
    async with question(demo_server) as assistant:
        answer = await assistant.ask("get_impact", {"node": "payments"})
    depths = {i["name"]: i["depth"] for i in answer["impacted"]}
    assert depths == {"checkout": 1, "frontend": 2, "api-gateway": 3}


async def test_what_changed_near_checkout_in_the_last_hour(demo_server: tuple[str, str]) -> None:
    async with question(demo_server) as assistant:
        answer = await assistant.ask("find_changes_near", {"node": "checkout", "from": "-1h"})
    changes = answer["changes"]
    assert changes, answer
    assert all(c["reason"] for c in changes)
    once_per_change([c["event"] for c in changes])


async def test_what_services_are_available(demo_server: tuple[str, str]) -> None:
    async with question(demo_server) as assistant:
        answer = await assistant.ask("search_nodes", {})
    assert {n["name"] for n in answer["nodes"] if n["kind"] == "service"} == set(SERVICES)


# -- at any hour: the live schedule, minute by minute -------------------------------------

_LOADED = datetime(2026, 3, 4, 17, 23, tzinfo=UTC)


def test_any_hour_of_the_live_demo_holds_a_change_near_checkout() -> None:
    """Every service of the demo is within two hops of checkout, so any change is near it."""
    changes = live_changes(_LOADED, _LOADED, _LOADED + timedelta(days=3))
    times = [_LOADED, *(datetime.fromisoformat(str(c["time"])) for c in changes)]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert max(gaps) < timedelta(hours=1)
    assert {c["service"] for c in changes} <= set(SERVICES)
    # And the load itself leaves the last hour before it with a change.
    before = live_changes(_LOADED, _LOADED - timedelta(hours=1), _LOADED)
    assert before


def test_every_minute_of_three_days_has_a_deployment_today_and_in_the_last_two_hours() -> None:
    end = _LOADED + timedelta(days=3)
    deployments = [
        datetime.fromisoformat(str(c["time"]))
        for c in live_changes(_LOADED, _LOADED - timedelta(hours=3), end)
        if c["type"] == "deployment"
    ]
    now = _LOADED
    while now < end:
        midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
        assert any(midnight <= t <= now for t in deployments), now
        assert any(now - timedelta(hours=2) <= t <= now for t in deployments), now
        now += timedelta(minutes=1)
