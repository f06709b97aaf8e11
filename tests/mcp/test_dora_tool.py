"""get_dora_metrics and the verdicts in query_events, through the official `mcp` SDK client,
on SQLite and PostgreSQL: the same figures as REST, a refusal in one sentence."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from mcp import Client
from mcp.types import TextContent

from tests.conftest import Tenant
from tests.factories import principal_for
from trailmap import clock
from trailmap.app import stdio_mcp_server
from trailmap.settings import Settings
from trailmap.storage import Database
from trailmap.storage import verdicts as verdict_store
from trailmap.timeline.ingest import ingest_events

pytestmark = pytest.mark.anyio


async def _history(db: Database, tenant: Tenant) -> str:
    now = clock.now().replace(microsecond=0)
    sha = "cd" * 20
    items: list[dict[str, Any]] = [
        {
            "id": "m1",
            "type": "change-merged",
            "at": now - timedelta(days=2, hours=3),
            "data": {"sha": sha},
        },
        {"id": "d1", "type": "deployment", "at": now - timedelta(days=2), "data": {"sha": sha}},
        {
            "id": "d2",
            "type": "deployment",
            "at": now - timedelta(days=1),
            "data": {"status": "failed"},
        },
    ]
    result = await ingest_events(
        db,
        principal_for(tenant.org),
        [
            {
                "specversion": "1.0",
                "id": i["id"],
                "type": i["type"],
                "source": "//github.com/acme/checkout",
                "time": i["at"].isoformat(),
                "data": i["data"],
                **({"subject": "production"} if i["type"] == "deployment" else {}),
            }
            for i in items
        ],
        max_event_bytes=10_000,
    )
    ids = {a["event_id"]: a["id"] for a in result.accepted}
    now_us = clock.now_us()
    await db.write(verdict_store.claim_verdict, tenant.org.id, ids["d1"], "t", now_us, now_us)
    await db.write(
        verdict_store.store_verdict, tenant.org.id, ids["d1"], "t", "regressed", {}, now_us
    )
    return str(ids["d1"])


async def test_get_dora_metrics_answers_as_rest_does(
    db: Database, settings: Settings, tenant: Tenant, client: httpx.AsyncClient
) -> None:
    await _history(db, tenant)
    server = stdio_mcp_server(settings, db, tenant.reader)
    async with Client(server) as mcp:
        tools = {t.name for t in (await mcp.list_tools()).tools}
        assert "get_dora_metrics" in tools
        result = await mcp.call_tool("get_dora_metrics", {"from": "-30d"})
        assert not result.is_error, result.content
        answer = result.structured_content
        assert answer is not None
        assert answer["deployment_frequency"]["deployments"] == 1
        assert answer["change_failure_rate"]["failed"] == 2  # one regressed, one failed
        assert answer["lead_time"]["median_seconds"] == 3 * 3600
        assert answer["edition"].startswith("2023 Accelerate State of DevOps")
        (text,) = result.content
        assert isinstance(text, TextContent)
        assert "change failure rate 100.0% (2 of 2)" in text.text
        rest = await client.get("/api/v1/dora?from=-30d", headers=tenant.auth(tenant.reader))
        figures = rest.json()["data"]
        for name in ("deployment_frequency", "lead_time", "change_failure_rate"):
            assert figures[name] == answer[name]

        events = await mcp.call_tool("query_events", {"from": "-7d", "type": ["deployment"]})
        (listed,) = events.content
        assert isinstance(listed, TextContent)
        assert "[verdict: regressed]" in listed.text

        refused = await mcp.call_tool("get_dora_metrics", {"from": "sometime soon"})
        assert refused.is_error
        (why,) = refused.content
        assert isinstance(why, TextContent)
        assert "from" in why.text
