"""GET /metrics: the server's own Prometheus metrics, by route template, with what was
ingested and which MCP tools were called, and nothing of any organization in them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import httpx2
import pytest
from fastapi import FastAPI
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.api.test_error_shape import assert_error_shape
from tests.conftest import Tenant
from tests.factories import event, make_key, make_org
from trailmap.app import create_app
from trailmap.settings import Settings
from trailmap.storage import Database

pytestmark = pytest.mark.anyio


def samples(text: str) -> list[Sample]:
    """Every sample of an exposition, parsed by prometheus_client's own parser."""
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def value(found: list[Sample], name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels` (0 when there is none)."""
    return sum(
        s.value
        for s in found
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


async def scrape(client: httpx.AsyncClient) -> list[Sample]:
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return samples(response.text)


async def test_requests_are_counted_by_route_template_never_by_raw_path(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    for _ in range(3):
        assert (await client.get("/api/v1/events", headers=tenant.auth())).status_code == 200
    missing = "01890000-0000-7000-8000-000000000000"
    assert (await client.get(f"/api/v1/events/{missing}", headers=tenant.auth())).status_code == 404
    assert (await client.get("/no/such/page-12345")).status_code == 404

    found = await scrape(client)
    requests = "trailmap_http_requests_total"
    assert value(found, requests, method="GET", route="/api/v1/events", status="200") == 3
    assert (
        value(found, requests, method="GET", route="/api/v1/events/{event_id}", status="404") == 1
    )
    assert value(found, requests, route="unmatched", status="404") == 1
    routes = {s.labels["route"] for s in found if s.name == requests}
    assert not any(missing in r or "12345" in r for r in routes), routes
    latency = "trailmap_http_request_duration_seconds_count"
    assert value(found, latency, method="GET", route="/api/v1/events") == 3
    build = [s for s in found if s.name == "trailmap_build_info"]
    assert len(build) == 1
    assert build[0].labels["database"] in {"sqlite", "postgresql"}
    assert {"trailmap_db_pool_size", "trailmap_db_pool_checked_out"} <= {s.name for s in found}


async def test_ingested_events_and_metric_points_are_counted_by_outcome(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    batch = [event(id="m-1"), event(id="m-2"), event(id="m-1"), {"specversion": "1.0"}]
    sent = await client.post("/api/v1/events", json=batch, headers=tenant.auth())
    assert sent.status_code < 300, sent.text
    again = await client.post("/api/v1/events", json=event(id="m-2"), headers=tenant.auth())
    assert again.status_code < 300, again.text
    points = [
        {"name": "error_rate", "value": 0.5, "time": "NOW", "service": "checkout"},
        {"name": "error_rate", "value": 0.7, "time": "NOW", "service": "payments"},
        {"name": "error_rate", "value": "high", "time": "NOW"},
    ]
    pushed = await client.post("/api/v1/metrics", json=points, headers=tenant.auth())
    assert pushed.status_code < 300, pushed.text

    found = await scrape(client)
    events = "trailmap_events_ingested_total"
    assert value(found, events, outcome="accepted") == 2
    assert value(found, events, outcome="duplicate") == 2  # within the batch, then again
    assert value(found, events, outcome="rejected") == 1
    points_total = "trailmap_metric_points_ingested_total"
    assert value(found, points_total, outcome="accepted") == 2
    assert value(found, points_total, outcome="rejected") == 1
    assert value(found, "trailmap_spans_ingested_total") == 0


async def test_metrics_name_no_organization_key_or_event_of_any_tenant(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    body = event(id="secret-event-id", source="//github.com/acme/secret-service")
    assert (await client.post("/api/v1/events", json=body, headers=tenant.auth())).is_success
    assert (await client.get("/api/v1/events", headers=tenant.auth())).is_success

    text = (await client.get("/metrics")).text
    for private in (
        tenant.org.id,
        tenant.org.slug,
        tenant.writer,
        tenant.writer[:12],
        "secret-event-id",
        "secret-service",
    ):
        assert private not in text, private


async def test_mcp_tool_calls_are_counted_by_tool(settings: Settings, db: Database) -> None:
    app = create_app(settings, database=db)
    org_key = await _key(db)
    async with _serving(app, org_key) as http:
        client = Client(streamable_http_client("http://127.0.0.1:8000/mcp", http_client=http))
        async with client:
            await client.call_tool("query_events", {"from": "-1h"})
            await client.call_tool("query_events", {"from": "-2h"})
            await client.call_tool("get_event_summary", {})
            await client.call_tool("get_event", {"id": "nope"})
            await client.call_tool("get_event", {"event_id": "nope"})  # no such argument
        found = samples((await http.get("/metrics")).text)
    calls = "trailmap_mcp_tool_calls_total"
    assert value(found, calls, tool="query_events", outcome="ok") == 2
    assert value(found, calls, tool="get_event_summary", outcome="ok") == 1
    assert value(found, calls, tool="get_event", outcome="error") == 2
    assert value(found, "trailmap_http_requests_total", method="POST", route="/mcp") >= 4


async def test_metrics_disabled_answer_404_in_the_error_shape(
    database_url: str, db: Database
) -> None:
    settings = Settings(database_url=database_url, metrics_enabled=False)
    app = create_app(settings, database=db)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        response = await http.get("/metrics")
        assert response.status_code == 404
        assert assert_error_shape(response)["code"] == "NOT_FOUND"
        assert "/metrics" not in app.openapi()["paths"]


async def _key(db: Database) -> str:
    return await make_key(db, await make_org(db), scope="read-only")


@asynccontextmanager
async def _serving(app: FastAPI, key: str) -> AsyncIterator[httpx2.AsyncClient]:
    """The app with its lifespan running (MCP needs it), and a client with `key`."""
    # The MCP SDK's client speaks httpx2.
    client = httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=app),
        base_url="http://127.0.0.1:8000",
        headers={"Authorization": f"Bearer {key}"},
    )
    async with app.router.lifespan_context(app), client:
        yield client
